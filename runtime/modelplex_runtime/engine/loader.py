"""Build the engine for one model entry: pick the loader for its kind, place and quantize the weights."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from modelplex_runtime.engine import loading
from modelplex_runtime.engine.embedder import (
    EmbeddingEngine,
    describe_pooling,
    load_sentence_transformer,
    matryoshka_dimensions,
)
from modelplex_runtime.engine.quantize import check_supported, param_bytes, quantize_model
from modelplex_runtime.engine.text_engine import TextEngine
from modelplex_runtime.engine_api import Engine, EngineOptions, ModelInfo
from modelplex_runtime.tool_parsers import infer_format
from modelplex_spec import ModelEntry, ModelKind, resolve_quant

log = logging.getLogger("modelplex_runtime.engine")


def load_engine(entry: ModelEntry, options: EngineOptions) -> Engine:
    device = loading.resolve_device(options.device)
    dtype = loading.resolve_dtype(entry.dtype, device)
    scheme = resolve_quant(entry.in_situ_quant) if entry.in_situ_quant else None
    if scheme is not None:
        check_supported(scheme, device)  # fail before spending minutes on weights
    if entry.kind is ModelKind.EMBEDDING:
        return _load_embedding(entry, options, device, dtype)
    if entry.kind is ModelKind.VISION_PLAIN:
        from modelplex_runtime.engine.vision_engine import load_vision_engine

        return load_vision_engine(entry, options, device, dtype)
    return _load_causal_lm(entry, options, device, dtype, scheme)


def _load_causal_lm(entry: ModelEntry, options: EngineOptions, device: torch.device, dtype: torch.dtype,
                    scheme: Any) -> Engine:
    hub = loading.hub_kwargs(entry)
    sel = entry.selector
    if entry.kind is ModelKind.GGUF:
        source, extra = sel.quantized_model_id, {"gguf_file": sel.quantized_filename}  # type: ignore[union-attr]
        tok_source = sel.tok_model_id or source  # type: ignore[union-attr]
        tok_extra = {} if sel.tok_model_id else extra  # type: ignore[union-attr]
    else:
        source, extra = sel.model_id, {}  # type: ignore[union-attr]
        tok_source, tok_extra = source, {}
    tokenizer = loading.from_pretrained(AutoTokenizer.from_pretrained, tok_source, **tok_extra, **hub)
    if getattr(sel, "tokenizer_json", None):
        from transformers import PreTrainedTokenizerFast

        template = tokenizer.chat_template
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=sel.tokenizer_json, **tokenizer.special_tokens_map)  # type: ignore[union-attr]
        tokenizer.chat_template = template
    override = loading.chat_template_override(entry)
    if override is not None:
        tokenizer.chat_template = override
    config = loading.from_pretrained(AutoConfig.from_pretrained, source, **extra, **hub)
    device_map = loading.device_map_for(entry, device, getattr(config, "num_hidden_layers", None))
    model = loading.from_pretrained(
        AutoModelForCausalLM.from_pretrained, source, dtype=dtype, device_map=device_map, **extra, **hub
    )
    if device_map is None:
        model.to(device)
    model.eval()
    quant_note = None
    if scheme is not None:
        before = param_bytes(model)
        started = time.perf_counter()
        quantize_model(model, scheme, device)
        after = param_bytes(model)
        quant_note = f"{entry.in_situ_quant}->{scheme.value}"
        log.info("quantized", extra={"scheme": scheme.value, "bytes_before": before, "bytes_after": after,
                                     "seconds": round(time.perf_counter() - started, 3)})
    head = model.get_output_embeddings()
    info = ModelInfo(
        kind=entry.kind.value,
        max_model_len=loading.context_length(model.config, entry, tokenizer),
        device=str(device),
        dtype=loading.dtype_name(dtype),
        quantization=quant_note,
        extra={"param_bytes": param_bytes(model)},
        vocab_size=int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size),
        tool_call_parser=entry.tool_call_parser or infer_format(getattr(tokenizer, "chat_template", None)),
    )
    return TextEngine(model, tokenizer, info, device, options)


def _load_embedding(entry: ModelEntry, options: EngineOptions, device: torch.device, dtype: torch.dtype) -> Engine:
    hub = loading.hub_kwargs(entry)
    source = entry.selector.model_id  # type: ignore[union-attr]
    model_dir = _local_dir(source, hub)
    has_config = model_dir is not None and (model_dir / "modules.json").is_file()
    model = load_sentence_transformer(source, device, dtype, hub, has_config)
    encoder = model[0].auto_model
    max_len = loading.context_length(encoder.config, entry, model.tokenizer)
    if model.max_seq_length:
        max_len = min(max_len, int(model.max_seq_length))
    size = model.get_embedding_dimension()
    info = ModelInfo(kind=entry.kind.value, max_model_len=max_len, device=str(device),
                     dtype=loading.dtype_name(dtype), extra={"pooling": describe_pooling(model), "embedding_size": size},
                     embedding_dimensions=matryoshka_dimensions(encoder.config))
    return EmbeddingEngine(model, info, options)


def _local_dir(source: str, hub: dict[str, Any]) -> Path | None:
    if Path(source).expanduser().is_dir():
        return Path(source).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True, allow_patterns=["*.json"],
                                      **{k: v for k, v in hub.items() if k in ("revision", "cache_dir")}))
    except Exception:  # no sentence-transformers config: mean pooling and normalization
        return None
