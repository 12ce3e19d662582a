"""An image-text-to-text model (VisionPlain) behind the Engine interface.

Requests run one at a time through ``model.generate`` on a worker thread (a vision prompt's pixel
inputs do not fit the text batcher's shared KV cache); tokens stream out through a streamer, and a
stopping criterion ends generation on cancellation or a stop string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from modelplex_runtime.engine import loading
from modelplex_runtime.engine.sequence import Generation
from modelplex_runtime.engine.text_engine import eos_token_ids
from modelplex_runtime.engine.tokens import TokenizerMixin
from modelplex_runtime.engine.worker import JobWorker
from modelplex_runtime.engine_api import (
    ConstraintError,
    EngineOptions,
    ModelInfo,
    Prompt,
    SamplingParams,
    TokenEvent,
)
from modelplex_runtime.errors import bad_request
from modelplex_runtime.textstream import TextStream
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_runtime.engine")


def to_processor_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI content parts -> the processor's: image_url parts become {"type": "image"} placeholders."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = [{"type": "image"} if p.get("type") in ("image_url", "input_image", "image")
                     else {"type": "text", "text": p.get("text", "")} for p in content]
        else:
            parts = [{"type": "text", "text": content or ""}]
        out.append({"role": m["role"], "content": parts})
    return out


class _Streamer(BaseStreamer):
    def __init__(self, seq: Generation, eos_ids: set[int], beat: Callable[[], None]) -> None:
        self.seq = seq
        self.beat = beat
        self.eos_ids = eos_ids
        self.prompt_seen = False
        self.ended_by_eos = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.beat()
        seq = self.seq
        for tok in value.reshape(-1).tolist():
            if seq.cancelled or seq.text.stopped or self.ended_by_eos:
                return
            if tok in self.eos_ids and not seq.params.ignore_eos:
                self.ended_by_eos = True
                return
            seq.out_ids.append(int(tok))
            delta = seq.text.update(seq.out_ids)
            if delta:
                seq.on_event(TokenEvent(delta, len(seq.out_ids)))

    def end(self) -> None:
        seq = self.seq
        if seq.cancelled:
            return
        if seq.text.stopped or self.ended_by_eos:
            reason = "stop"
        else:
            reason = "length" if len(seq.out_ids) >= seq.params.max_tokens else "stop"
        tail = "" if seq.text.stopped else seq.text.flush(seq.out_ids)
        seq.finished = True
        seq.on_event(TokenEvent(tail, len(seq.out_ids), reason))


class _Stop(StoppingCriteria):
    def __init__(self, seq: Generation) -> None:
        self.seq = seq

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = self.seq.cancelled or self.seq.text.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class VisionEngine(TokenizerMixin):
    def __init__(self, model: Any, processor: Any, info: ModelInfo, device: torch.device, options: EngineOptions) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.info = info
        self.device = device
        self._on_step = options.on_step
        self._eos = eos_token_ids(model, self.tokenizer)
        self._busy = 0
        self._worker: JobWorker[Generation] = JobWorker("vision", self._run_one, stall_seconds=options.stall_seconds)

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                      images: list[Any] | None = None) -> list[int]:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise bad_request("this model has no chat template; set chat_template in its entry")
        try:
            text = self.processor.apply_chat_template(to_processor_messages(messages), tokenize=False,
                                                      add_generation_prompt=add_generation_prompt, chat_template=template)
        except Exception as exc:
            raise bad_request(f"the chat template rejected these messages: {exc}", param="messages") from exc
        images = images or []
        try:
            inputs = self.processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False)
        except Exception as exc:  # e.g. image placeholders and images disagree
            raise bad_request(f"the processor rejected this prompt: {exc}", param="messages") from exc
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        return Prompt(inputs["input_ids"][0].tolist(), extra)

    def generate(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]) -> Generation:
        stream = TextStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
        seq = Generation(prompt_ids, params, on_event, stream)
        self._worker.submit(seq)
        return seq

    def embed(self, texts: list[str], on_done: Callable[[Any], None], dimensions: int | None = None) -> Any:
        raise ValueError("this is not an embedding model")

    def compile_constraint(self, spec: Any) -> Any:
        raise ConstraintError("constrained decoding is not supported for VisionPlain models")

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

    def _run_one(self, batch: list[Generation]) -> None:
        (seq,) = batch
        if seq.cancelled:
            return
        self._busy = 1
        try:
            self._run(seq)
        except Exception as exc:
            log.exception("vision generation failed")
            if not seq.finished:
                seq.finished = True
                seq.on_event(TokenEvent("", len(seq.out_ids), "error", error=f"{type(exc).__name__}: {exc}"))
        finally:
            self._busy = 0

    def _run(self, seq: Generation) -> None:
        if self._on_step is not None:
            self._on_step(1)
        p = seq.params
        extra = seq.prompt_ids.extra if isinstance(seq.prompt_ids, Prompt) else {}
        ids = torch.tensor([list(seq.prompt_ids)], dtype=torch.long, device=self.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        inputs.update({k: v.to(self.device) if hasattr(v, "to") else v for k, v in extra.items()})
        if "pixel_values" in inputs and torch.is_floating_point(inputs["pixel_values"]):
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sampling: dict[str, Any] = {"do_sample": False}
        if not p.greedy:
            if p.seed is not None:  # one request at a time on this thread, so the global RNG is ours
                torch.manual_seed(p.seed)
            sampling = {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k or None}
        kwargs: dict[str, Any] = {}
        if p.ignore_eos:
            kwargs["min_new_tokens"] = p.max_tokens
        with torch.inference_mode():
            self.model.generate(**inputs, max_new_tokens=p.max_tokens, streamer=_Streamer(seq, self._eos, self._worker.heartbeat.beat),
                                stopping_criteria=StoppingCriteriaList([_Stop(seq)]), **sampling, **kwargs)


def load_vision_engine(entry: ModelEntry, options: EngineOptions, device: torch.device, dtype: torch.dtype) -> VisionEngine:
    hub = loading.hub_kwargs(entry)
    source = entry.selector.model_id  # type: ignore[union-attr]
    processor = loading.from_pretrained(AutoProcessor.from_pretrained, source, **hub)
    override = loading.chat_template_override(entry)
    if override is not None:
        processor.chat_template = override
        processor.tokenizer.chat_template = override
    model = loading.from_pretrained(AutoModelForImageTextToText.from_pretrained, source, dtype=dtype, **hub)
    model.to(device).eval()
    text_config = getattr(model.config, "text_config", model.config)
    info = ModelInfo(kind=entry.kind.value, max_model_len=loading.context_length(text_config, entry, processor.tokenizer),
                     device=str(device), dtype=loading.dtype_name(dtype))
    return VisionEngine(model, processor, info, device, options)
