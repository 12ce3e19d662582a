"""A sentence-embedding encoder behind the Engine interface, batching waiting requests together.

Pooling follows the model's sentence-transformers config (1_Pooling/config.json: mean or CLS);
vectors are L2-normalized, as sentence-transformers' Normalize module does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from modelplex_runtime.engine_api import EngineOptions, ModelInfo, SamplingParams, TokenEvent

log = logging.getLogger("modelplex_runtime.engine")

MAX_TEXTS_PER_FORWARD = 64


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


class EmbeddingEngine:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                 pooling: str, options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.pooling = pooling
        self._on_step = options.on_step
        self._jobs: deque[tuple[list[str], Callable[[Any], None]]] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._thread = threading.Thread(target=self._loop, name="embedder", daemon=True)
        self._thread.start()

    def tokenize_text(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        raise ValueError("an embedding model has no chat template")

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        vocab = len(self.tokenizer)
        if any(i < 0 or i >= vocab for i in ids):
            raise ValueError(f"token ids outside the vocabulary (size {vocab})")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def generate(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]) -> Any:
        raise ValueError("an embedding model does not generate text")

    def embed(self, texts: list[str], on_done: Callable[[Any], None]) -> None:
        with self._cv:
            self._jobs.append((texts, on_done))
            self._cv.notify()

    def queue_depth(self) -> int:
        return len(self._jobs)

    def running(self) -> int:
        return self._busy

    def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._jobs:
                    self._cv.wait()
                if self._stopping:
                    return
                batch = [self._jobs.popleft()]
                count = len(batch[0][0])
                while self._jobs and count + len(self._jobs[0][0]) <= MAX_TEXTS_PER_FORWARD:
                    job = self._jobs.popleft()
                    batch.append(job)
                    count += len(job[0])
            self._busy = count
            try:
                vectors = self._encode([t for texts, _ in batch for t in texts])
            except Exception as exc:
                log.exception("embedding batch failed")
                for _, done in batch:
                    done(exc)
                continue
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
