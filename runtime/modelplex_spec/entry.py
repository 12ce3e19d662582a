"""One model entry, in the format of mistral.rs's multi-model config file.

An entry names exactly one model kind (``Plain``, ``VisionPlain``/``MultimodalPlain``, ``GGUF`` or
``Embedding``) holding the loader settings, plus optional top-level settings (``alias``,
``in_situ_quant``, ...). modelplex adds idle unloading, pinning and Kubernetes settings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelplex_spec.kubernetes import KubernetesSettings
from modelplex_spec.quant import resolve_quant
from modelplex_spec.scaling import Scaling, ScalingSettings, resolve_scaling, scaling_problems


class ModelKind(StrEnum):
    PLAIN = "Plain"
    VISION_PLAIN = "VisionPlain"
    GGUF = "GGUF"
    EMBEDDING = "Embedding"


SUPPORTED_KINDS: tuple[str, ...] = ("Plain", "VisionPlain", "MultimodalPlain", "GGUF", "Embedding")

# Kinds mistral.rs knows that modelplex refuses, with a reason users can act on.
UNSUPPORTED_KINDS: dict[str, str] = {
    "DiffusionPlain": "image generation models are not served by modelplex",
    "Speech": "speech generation models are not served by modelplex",
    "XLora": "X-LoRA adapters are not supported",
    "Lora": "LoRA adapters are not supported",
    "XLoraGGUF": "X-LoRA adapters are not supported",
    "LoraGGUF": "LoRA adapters are not supported",
    "GGML": "GGML files are not supported; convert to GGUF",
    "XLoraGGML": "X-LoRA adapters are not supported",
    "LoraGGML": "LoRA adapters are not supported",
    "AnyMoe": "AnyMoE models are not supported",
    "Toml": "nested TOML selectors are not supported",
    "Run": "auto-detected selectors are not supported; name the kind (Plain, VisionPlain, GGUF, Embedding)",
}

DType = Literal["auto", "bf16", "f16", "f32"]

_DTYPE_SYNONYMS = {
    "auto": "auto",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "f16": "f16",
    "fp16": "f16",
    "float16": "f16",
    "half": "f16",
    "f32": "f32",
    "fp32": "f32",
    "float32": "f32",
    "float": "f32",
}

RESERVED_IDS = frozenset({"default"})

EngineName = Literal["transformers", "vllm"]
"""Which server runs the model: the modelplex runtime (torch + transformers) or vLLM's OpenAI server."""

ToolCallParser = Literal["hermes", "llama3_json", "mistral"]
"""How a model writes tool calls in its output (vLLM's parser names): Hermes/Qwen ``<tool_call>`` JSON,
Llama 3.x JSON, Mistral ``[TOOL_CALLS]``."""


class _Selector(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    dtype: DType = Field(default="auto", description="Weight dtype: auto (bf16 on CUDA, f32 on CPU), bf16, f16 or f32.")
    max_seq_len: int | None = Field(
        default=None, gt=0, description="Context length cap; defaults to the model's own maximum."
    )
    arch: str | None = Field(default=None, description="Architecture hint; accepted for compatibility.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    hf_cache_path: str | None = Field(default=None, description="Hub cache directory for this model.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _normalize_dtype(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _DTYPE_SYNONYMS:
            return _DTYPE_SYNONYMS[value.strip().lower()]
        return value


class PlainSpec(_Selector):
    """A causal language model with its tokenizer."""

    model_id: str = Field(min_length=1, description="Hugging Face repo id or local directory.")
    tokenizer_json: str | None = Field(default=None, description="Path to a tokenizer.json overriding the model's.")


class VisionPlainSpec(_Selector):
    """An image-text-to-text model with its processor."""

    model_id: str = Field(min_length=1, description="Hugging Face repo id or local directory.")
    max_edge: int | None = Field(default=None, gt=0, description="Resize images so no edge exceeds this.")
    max_num_images: int | None = Field(default=None, gt=0, description="Most images accepted in one request.")


class GGUFSpec(_Selector):
    """A GGUF checkpoint loaded (dequantized) through transformers."""

    quantized_model_id: str = Field(min_length=1, description="Repo id or directory holding the GGUF file.")
    quantized_filename: str = Field(min_length=1, description="The GGUF file name inside quantized_model_id.")
    tok_model_id: str | None = Field(
        default=None, description="Repo id or directory of the tokenizer; defaults to the GGUF's own."
    )


class EmbeddingSpec(_Selector):
    """A sentence-embedding encoder; pooling follows its sentence-transformers config."""

    model_id: str = Field(min_length=1, description="Hugging Face repo id or local directory.")


class ModelEntry(BaseModel):
    """One model: exactly one kind selector plus optional settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    Plain: PlainSpec | None = None
    VisionPlain: VisionPlainSpec | None = Field(
        default=None, description="Also accepted under its newer name MultimodalPlain."
    )
    GGUF: GGUFSpec | None = None
    Embedding: EmbeddingSpec | None = None

    alias: str | None = Field(default=None, min_length=1, description="The API model id; defaults to the pipeline name.")
    chat_template: str | None = Field(
        default=None, description="Chat template: a path to a .jinja/.json file or a literal Jinja template."
    )
    jinja_explicit: str | None = Field(default=None, description="Path to a Jinja chat template file (takes precedence).")
    in_situ_quant: str | None = Field(
        default=None, description="Quantize weights at load time (mistral.rs names: Q4K, Q8_0, HQQ8, FP8, ...)."
    )
    num_device_layers: list[str] | None = Field(
        default=None, description='Layers per device, "ORD:NUM" items (or a single "NUM" for one device).'
    )
    idle_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Unload the model after this many seconds without a request (also accepted as ttl).",
    )
    pinned: bool = Field(default=False, description="Load at start and never unload for idleness.")
    preload: bool = Field(default=False, description="Load at start (idle unloading still applies).")
    engine: EngineName = Field(
        default="transformers",
        description="The server that runs the model: transformers (the modelplex runtime) or vllm.",
    )
    engine_args: list[str] | None = Field(
        default=None,
        description="Extra command-line arguments appended verbatim to the engine's server (vLLM's flags, or "
        "the runtime's); a flag modelplex sets from another field is refused.",
    )
    tool_call_parser: ToolCallParser | None = Field(
        default=None,
        description="The model's tool-call output format (hermes, llama3_json, mistral); inferred from "
        "the chat template when unset and unambiguous.",
    )
    scaling: ScalingSettings | None = Field(
        default=None,
        description="Replicas by load and how requests are spread over them (local processes or pods alike).",
    )
    kubernetes: KubernetesSettings | None = Field(default=None, description="Settings used only on Kubernetes.")

    @model_validator(mode="before")
    @classmethod
    def _check_kind_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, reason in UNSUPPORTED_KINDS.items():
            if name in data:
                raise ValueError(
                    f"model kind {name!r} is not supported ({reason}); supported kinds: {', '.join(SUPPORTED_KINDS)}"
                )
        if "MultimodalPlain" in data:
            if "VisionPlain" in data:
                raise ValueError("give either VisionPlain or MultimodalPlain, not both")
            data["VisionPlain"] = data.pop("MultimodalPlain")
        # ttl (llama-swap's name) and idle_timeout are the same setting; accept either name.
        if "ttl" in data:
            if "idle_timeout" in data:
                raise ValueError("give either ttl or idle_timeout, not both")
            data["idle_timeout"] = data.pop("ttl")
        present = [k for k in ("Plain", "VisionPlain", "GGUF", "Embedding") if data.get(k) is not None]
        if not present:
            raise ValueError(f"a model entry needs exactly one kind; supported kinds: {', '.join(SUPPORTED_KINDS)}")
        if len(present) > 1:
            raise ValueError(f"a model entry needs exactly one kind, got {', '.join(present)}")
        return data

    @field_validator("alias")
    @classmethod
    def _alias_not_reserved(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in RESERVED_IDS:
            raise ValueError('"default" is reserved for the default model and cannot be an alias')
        return value

    @field_validator("in_situ_quant")
    @classmethod
    def _known_quant(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_quant(value)
        return value

    @field_validator("num_device_layers")
    @classmethod
    def _device_layers_format(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        for item in value:
            parts = item.split(":")
            ok = (len(parts) == 1 and parts[0].strip().isdigit()) or (
                len(parts) == 2 and all(p.strip().isdigit() for p in parts)
            )
            if not ok:
                raise ValueError(f'num_device_layers item {item!r} must be "ORD:NUM" or "NUM"')
        return value

    @model_validator(mode="after")
    def _quant_fits_kind(self) -> ModelEntry:
        if self.in_situ_quant is not None and self.kind is ModelKind.GGUF:
            raise ValueError("in_situ_quant does not apply to GGUF models: their weights are already quantized")
        return self

    @model_validator(mode="after")
    def _replicas_agree(self) -> ModelEntry:
        problems = scaling_problems(self.scaling, *self._kube_replicas())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _kube_replicas(self) -> tuple[int | None, int | None]:
        k8s = self.kubernetes
        return (k8s.minReplicas, k8s.maxReplicas) if k8s is not None else (None, None)

    @property
    def effective_scaling(self) -> Scaling:
        """The model's replica range, autoscaling and routing, defaults and ``kubernetes`` fields resolved."""
        return resolve_scaling(self.scaling, *self._kube_replicas())

    @model_validator(mode="after")
    def _engine_can_honour(self) -> ModelEntry:
        # Imported here: the engine mappings read entries, so they import this module.
        from modelplex_spec.engines import engine_for

        problems = engine_for(self).problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def kind(self) -> ModelKind:
        for kind in ModelKind:
            if getattr(self, kind.value) is not None:
                return kind
        raise AssertionError("validated entry has no kind")  # pragma: no cover

    @property
    def selector(self) -> PlainSpec | VisionPlainSpec | GGUFSpec | EmbeddingSpec:
        return getattr(self, self.kind.value)

    @property
    def pipeline_name(self) -> str:
        """The canonical name: model_id, or quantized_model_id for GGUF."""
        sel = self.selector
        return sel.quantized_model_id if isinstance(sel, GGUFSpec) else sel.model_id

    @property
    def api_id(self) -> str:
        """The id clients use: the alias when set, else the pipeline name."""
        return self.alias or self.pipeline_name

    @property
    def dtype(self) -> DType:
        return self.selector.dtype

    @property
    def max_seq_len(self) -> int | None:
        return self.selector.max_seq_len

    def to_config_dict(self) -> dict[str, Any]:
        """The entry in config-file form (kind keys and snake_case, unset fields left out)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True, by_alias=True)
        return data
