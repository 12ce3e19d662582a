"""A causal LM (Plain or GGUF) behind the Engine interface: tokenizer + chat template + batcher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from modelplex_runtime.constraints import ConstraintSpec
from modelplex_runtime.engine.batcher import ContinuousBatcher, Core
from modelplex_runtime.engine.cpu_linear import use_onednn_linears
from modelplex_runtime.engine.grammar import Compiled, GrammarCompiler
from modelplex_runtime.engine.kv_slots import SlotCache
from modelplex_runtime.engine.loading import kv_cache_budget
from modelplex_runtime.engine.logprobs import TokenTexts
from modelplex_runtime.engine.packed_core import PackedCore
from modelplex_runtime.engine.packed_setup import enable_packed
from modelplex_runtime.engine.padded_core import PaddedCore
from modelplex_runtime.engine.sequence import Generation
from modelplex_runtime.engine.threads import thread_policy
from modelplex_runtime.engine.tokens import TokenizerMixin
from modelplex_runtime.engine_api import (
    BatchStats,
    EngineOptions,
    GenerationHandle,
    ModelInfo,
    SamplingParams,
    TokenEvent,
)
from modelplex_runtime.errors import bad_request

log = logging.getLogger("modelplex_runtime.engine")


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


CoreFactory = Callable[[Callable[[Generation], None]], Core]


def batch_path(model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
               options: EngineOptions) -> tuple[CoreFactory, ModelInfo]:
    """The batch path for this model (packed when it can run it, else padded) and the model's info with
    that path, and on the packed path the KV cache's size, in ``extra``."""
    threads = thread_policy(options.cpu_threads) if device.type == "cpu" else None
    if device.type == "cpu" and options.cpu_linear == "onednn":
        info = replace(info, extra={**info.extra, "onednn_linears": use_onednn_linears(model)})
    eos = eos_token_ids(model, tokenizer)
    texts = TokenTexts(tokenizer)
    shape = enable_packed(model, device) if options.batch_path == "auto" else "the padded path was asked for"
    if isinstance(shape, str):
        log.info("this model runs on the padded batch path", extra={"reason": shape})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        return (lambda requeue: PaddedCore(model, eos, int(pad), device, options.max_batch_size, threads=threads,
                                           on_step=options.on_step, token_texts=texts),
                replace(info, extra={**info.extra, "batch_path": "padded"}))
    budget = kv_cache_budget(device, options.kv_cache_bytes) // shape.bytes_per_token
    # a request that could never fit the KV cache is refused up front, like one past the context
    info = replace(info, max_model_len=min(info.max_model_len, budget - 1),
                   extra={**info.extra, "batch_path": "packed", "kv_cache_tokens": budget})
    cache = SlotCache(shape, budget, options.max_batch_size)
    return (lambda requeue: PackedCore(model, cache, eos, options.max_step_tokens, info.max_model_len, requeue,
                                       threads=threads, on_step=options.on_step, token_texts=texts), info)


class TextEngine(TokenizerMixin):
    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                 options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = eos_token_ids(model, tokenizer)
        self._grammars = GrammarCompiler(tokenizer, info.vocab_size or len(tokenizer), eos)
        make_core, self.info = batch_path(model, tokenizer, info, device, options)
        self._batcher = ContinuousBatcher(
            make_core,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            device=device,
            max_batch_size=options.max_batch_size,
            decode_special=lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
            stall_seconds=options.stall_seconds,
        )

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    tools: list[dict[str, Any]] | None = None) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise bad_request("this model has no chat template; set chat_template in its entry or use /v1/completions")
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # jinja raises for templates that reject these messages (roles, order)
            raise bad_request(f"the chat template rejected these messages: {exc}", param="messages") from exc

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                      tools: list[dict[str, Any]] | None = None) -> list[int]:
        # the rendered template already holds any BOS token
        return self.tokenize_text(self.render_chat(messages, add_generation_prompt, tools), add_special_tokens=False)

    def compile_constraint(self, spec: ConstraintSpec) -> Compiled:
        return self._grammars.compile(spec)

    def health(self) -> str | None:
        return self._batcher.health()

    def generate(self, prompt_ids: list[int], params: SamplingParams,
                 on_event: Callable[[TokenEvent], None]) -> GenerationHandle:
        return self._batcher.submit(prompt_ids, params, on_event)

    def embed(self, texts: list[str], on_done: Callable[[Any], None], dimensions: int | None = None) -> Any:
        raise ValueError("this is not an embedding model")

    def queue_depth(self) -> int:
        return self._batcher.queue_depth()

    def running(self) -> int:
        return self._batcher.running()

    def batch_stats(self) -> BatchStats:
        return self._batcher.core.stats()

    def shutdown(self) -> None:
        self._batcher.shutdown()
