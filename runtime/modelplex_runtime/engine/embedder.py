"""A sentence-embedding model behind the Engine interface, batching waiting requests together.

The model runs through sentence-transformers' own modules, as its ``modules.json`` lists them (pooling:
mean, CLS, max, last token, ...; Dense heads; Normalize only when the model has it). A model without a
sentence-transformers config gets mean pooling and L2 normalization. ``dimensions`` (Matryoshka) keeps
the first dimensions and normalizes again when the model normalizes; it is offered only for models
whose config says they were trained for it (``is_matryoshka`` / ``matryoshka_dimensions``, as vLLM reads
them). A cancelled job (its client left) is skipped, also between forwards of a running batch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modelplex_runtime.engine.tokens import TokenizerMixin
from modelplex_runtime.engine.worker import JobWorker
from modelplex_runtime.engine_api import EngineOptions, ModelInfo, SamplingParams, TokenEvent

log = logging.getLogger("modelplex_runtime.engine")

MAX_TEXTS_PER_FORWARD = 64


@dataclass(eq=False)
class EmbedJob:
    texts: list[str]
    on_done: Callable[[Any], None]
    dimensions: int | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


def take_texts(jobs: deque[EmbedJob]) -> list[EmbedJob]:
    """Waiting requests still wanted, in order, up to MAX_TEXTS_PER_FORWARD texts (at least one request)."""
    while jobs and jobs[0].cancelled:
        jobs.popleft()
    if not jobs:
        return []
    batch = [jobs.popleft()]
    count = len(batch[0].texts)
    while jobs and (jobs[0].cancelled or count + len(jobs[0].texts) <= MAX_TEXTS_PER_FORWARD):
        job = jobs.popleft()
        if not job.cancelled:
            batch.append(job)
            count += len(job.texts)
    return batch


def describe_pooling(model: Any) -> str:
    """The module chain in words, e.g. 'lasttoken', 'mean+normalize', 'max+dense'."""
    parts: list[str] = []
    for module in model:
        name = type(module).__name__
        if name == "Pooling":
            mode = module.pooling_mode
            parts.append(mode if isinstance(mode, str) else "+".join(mode))
        elif name in ("Dense", "Normalize", "LayerNorm"):
            parts.append(name.lower())
    return "+".join(parts) or "none"


def normalizes(model: Any) -> bool:
    return any(type(m).__name__ == "Normalize" for m in model)


def matryoshka_dimensions(config: Any) -> tuple[int, ...] | None:
    dims = getattr(config, "matryoshka_dimensions", None)
    if dims:
        return tuple(sorted(int(d) for d in dims))
    return () if getattr(config, "is_matryoshka", False) else None


class EmbeddingEngine(TokenizerMixin):
    def __init__(self, model: Any, info: ModelInfo, options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.info = info
        self._normalizes = normalizes(model)
        self._on_step = options.on_step
        self._busy = 0
        self._worker: JobWorker[EmbedJob] = JobWorker("embedder", self._run_batch, take_texts,
                                                     stall_seconds=options.stall_seconds)

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                      tools: Any = None) -> list[int]:
        raise ValueError("an embedding model has no chat template")

    def generate(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]) -> Any:
        raise ValueError("an embedding model does not generate text")

    def compile_constraint(self, spec: Any) -> Any:
        raise ValueError("an embedding model does not generate text")

    def embed(self, texts: list[str], on_done: Callable[[Any], None], dimensions: int | None = None) -> EmbedJob:
        job = EmbedJob(texts, on_done, dimensions)
        self._worker.submit(job)
        return job

    def health(self) -> str | None:
        return self._worker.health()

    def queue_depth(self) -> int:
        return self._worker.queue_depth()

    def running(self) -> int:
        return self._busy

    def batch_stats(self) -> None:
        return None

    def shutdown(self) -> None:
        self._worker.shutdown()

    def _run_batch(self, batch: list[EmbedJob]) -> None:
        self._busy = sum(len(job.texts) for job in batch)
        try:
            vectors = self._encode(batch)
        except Exception as exc:
            log.exception("embedding batch failed")
            for job in batch:
                job.on_done(exc)
            return
        finally:
            self._busy = 0
        for job, vecs in zip(batch, vectors, strict=True):
            if vecs is not None:
                job.on_done(self._shorten(vecs, job.dimensions).tolist())

    def _encode(self, batch: list[EmbedJob]) -> list[torch.Tensor | None]:
        """Each job's vectors (None for a job cancelled meanwhile); forwards of at most 64 texts, skipping
        any whose jobs were all cancelled."""
        owners = [j for j, job in enumerate(batch) for _ in job.texts]
        texts = [t for job in batch for t in job.texts]
        rows: list[torch.Tensor] = []
        for start in range(0, len(texts), MAX_TEXTS_PER_FORWARD):
            chunk = slice(start, start + MAX_TEXTS_PER_FORWARD)
            if all(batch[j].cancelled for j in owners[chunk]):
                rows.append(torch.empty(0))
                continue
            if self._on_step is not None:
                self._on_step(len(texts[chunk]))
            with torch.inference_mode():
                out = self.model.encode(texts[chunk], batch_size=MAX_TEXTS_PER_FORWARD, convert_to_tensor=True,
                                        show_progress_bar=False)
            rows.append(out.float().cpu())
            self._worker.heartbeat.beat()
        result: list[torch.Tensor | None] = []
        start = 0
        for job in batch:
            end = start + len(job.texts)
            if job.cancelled:
                result.append(None)
            else:
                result.append(torch.cat(_rows_between(rows, start, end)))
            start = end
        return result

    def _shorten(self, vecs: torch.Tensor, dimensions: int | None) -> torch.Tensor:
        if dimensions is None or dimensions >= vecs.shape[-1]:
            return vecs
        vecs = vecs[:, :dimensions]
        return torch.nn.functional.normalize(vecs, p=2, dim=-1) if self._normalizes else vecs


def _rows_between(chunks: list[torch.Tensor], start: int, end: int) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for i, chunk in enumerate(chunks):
        lo = i * MAX_TEXTS_PER_FORWARD
        a, b = max(start, lo) - lo, min(end, lo + MAX_TEXTS_PER_FORWARD) - lo
        if a < b:
            out.append(chunk[a:b])
    return out


def load_sentence_transformer(source: str, device: torch.device, dtype: torch.dtype, hub: dict[str, Any],
                              has_config: bool) -> Any:
    """The model as sentence-transformers builds it from its modules.json; a plain encoder (no
    sentence-transformers config) gets mean pooling and normalization. Offline from the hub cache first,
    then a download."""
    from pathlib import Path

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize

    kwargs: dict[str, Any] = {"device": str(device), "model_kwargs": {"dtype": dtype}}
    for ours, theirs in (("revision", "revision"), ("cache_dir", "cache_folder"), ("token", "token")):
        if hub.get(ours):
            kwargs[theirs] = hub[ours]
    local = Path(source).expanduser()
    if local.exists():
        model = SentenceTransformer(str(local), **{k: v for k, v in kwargs.items() if k not in ("revision", "token")})
    else:
        try:
            model = SentenceTransformer(source, local_files_only=True, **kwargs)
        except OSError:
            log.info("not in the hub cache; downloading", extra={"source": source})
            model = SentenceTransformer(source, **kwargs)
    if not has_config and not normalizes(model):
        model = SentenceTransformer(modules=[*model, Normalize()], device=str(device))
    model.eval()
    return model
