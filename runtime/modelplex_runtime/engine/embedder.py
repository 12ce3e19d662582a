"""A sentence-embedding encoder behind the Engine interface, batching waiting requests together.

Pooling follows the model's sentence-transformers config (1_Pooling/config.json: mean or CLS);
vectors are L2-normalized, as sentence-transformers' Normalize module does.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modelplex_runtime.engine.tokens import TokenizerMixin
from modelplex_runtime.engine.worker import JobWorker
from modelplex_runtime.engine_api import EngineOptions, ModelInfo, SamplingParams, TokenEvent

log = logging.getLogger("modelplex_runtime.engine")

MAX_TEXTS_PER_FORWARD = 64

EmbedJob = tuple[list[str], Callable[[Any], None]]


def pooling_mode(model_dir: Path | None) -> str:
    """'mean' or 'cls' from the sentence-transformers pooling config; mean when there is none."""
    if model_dir is None:
        return "mean"
    modules = model_dir / "modules.json"
    pool_dir = model_dir / "1_Pooling"
    if modules.is_file():
        for mod in json.loads(modules.read_text()):
            if str(mod.get("type", "")).endswith("Pooling"):
                pool_dir = model_dir / mod.get("path", "1_Pooling")
    cfg = pool_dir / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        if data.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        vecs = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vecs = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(vecs.float(), p=2, dim=-1)


def take_texts(jobs: deque[EmbedJob]) -> list[EmbedJob]:
    """Waiting requests, in order, up to MAX_TEXTS_PER_FORWARD texts (always at least one request)."""
    batch = [jobs.popleft()]
    count = len(batch[0][0])
    while jobs and count + len(jobs[0][0]) <= MAX_TEXTS_PER_FORWARD:
        job = jobs.popleft()
        batch.append(job)
        count += len(job[0])
    return batch


class EmbeddingEngine(TokenizerMixin):
    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                 pooling: str, options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.pooling = pooling
        self._on_step = options.on_step
        self._busy = 0
        self._worker: JobWorker[EmbedJob] = JobWorker("embedder", self._run_batch, take_texts)

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        raise ValueError("an embedding model has no chat template")

    def generate(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]) -> Any:
        raise ValueError("an embedding model does not generate text")

    def embed(self, texts: list[str], on_done: Callable[[Any], None]) -> None:
        self._worker.submit((texts, on_done))

    def queue_depth(self) -> int:
        return self._worker.queue_depth()

    def running(self) -> int:
        return self._busy

    def shutdown(self) -> None:
        self._worker.shutdown()

    def _run_batch(self, batch: list[EmbedJob]) -> None:
        self._busy = sum(len(texts) for texts, _ in batch)
        try:
            vectors = self._encode([t for texts, _ in batch for t in texts])
        except Exception as exc:
            log.exception("embedding batch failed")
            for _, done in batch:
                done(exc)
            return
        finally:
            self._busy = 0
        start = 0
        for texts, done in batch:
            done(vectors[start : start + len(texts)])
            start += len(texts)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if self._on_step is not None:
            self._on_step(len(texts))
        out: list[list[float]] = []
        with torch.inference_mode():
            for i in range(0, len(texts), MAX_TEXTS_PER_FORWARD):
                enc = self.tokenizer(texts[i : i + MAX_TEXTS_PER_FORWARD], padding=True, truncation=True,
                                     max_length=self.info.max_model_len, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                out.extend(pool(hidden, enc["attention_mask"], self.pooling).cpu().tolist())
        return out
