"""The multi-model config file: mistral.rs's JSON format (label -> entry) and its current TOML format."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from modelplex_spec.entry import RESERVED_IDS, ModelEntry


class ConfigError(ValueError):
    """A config that cannot be served; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class LabeledEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    entry: ModelEntry


class ModelplexConfig(BaseModel):
    """Validated config: entries in file order and the resolved default API id."""

    models: list[LabeledEntry]
    default_model_id: str

    def by_api_id(self) -> dict[str, ModelEntry]:
        return {m.entry.api_id: m.entry for m in self.models}


def _format_validation_error(label: str, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"model {label!r}{' field ' + where if where else ''}: {msg}")
    return problems


def parse_entries(raw_models: list[tuple[str, Any]], default_model_id: str | None = None) -> ModelplexConfig:
    """Validate (label, raw entry) pairs in order; raise ConfigError listing every problem."""
    problems: list[str] = []
    parsed: list[LabeledEntry] = []
    for label, raw in raw_models:
        if not isinstance(raw, dict):
            problems.append(f"model {label!r}: expected an object, got {type(raw).__name__}")
            continue
        try:
            parsed.append(LabeledEntry(label=label, entry=ModelEntry.model_validate(raw)))
        except ValidationError as exc:
            problems.extend(_format_validation_error(label, exc))
    if not raw_models:
        problems.append("the config defines no models")

    seen: dict[str, str] = {}
    for item in parsed:
        api_id = item.entry.api_id
        if api_id in seen:
            problems.append(
                f"models {seen[api_id]!r} and {item.label!r} both use the API id {api_id!r}; give one an alias"
            )
        else:
            seen[api_id] = item.label

    resolved_default = ""
    if parsed:
        if default_model_id is None:
            resolved_default = parsed[0].entry.api_id
        else:
            match = resolve_configured_id(parsed, default_model_id)
            if match is None:
                ids = ", ".join(p.entry.api_id for p in parsed)
                problems.append(f"default model {default_model_id!r} is not among the models ({ids})")
            else:
                resolved_default = match
    if problems:
        raise ConfigError(problems)
    return ModelplexConfig(models=parsed, default_model_id=resolved_default)


def resolve_configured_id(models: list[LabeledEntry], wanted: str) -> str | None:
    """Map an alias or a pipeline name to its API id (aliases win over pipeline names)."""
    if wanted in RESERVED_IDS:
        return None
    for m in models:
        if m.entry.api_id == wanted:
            return m.entry.api_id
    for m in models:
        if m.entry.pipeline_name == wanted:
            return m.entry.api_id
    return None


def parse_config(data: Any, default_model_id: str | None = None) -> ModelplexConfig:
    """Parse the JSON format (an object of label -> entry) or the TOML format (``[[models]]``)."""
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        return _parse_toml_shape(data, default_model_id)
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be an object of label -> model entry, got {type(data).__name__}"])
    return parse_entries(list(data.items()), default_model_id)


# mistral.rs's TOML `kind` values mapped onto our selector names.
_TOML_KINDS = {
    "text": "Plain",
    "plain": "Plain",
    "auto": "Plain",
    "multimodal": "VisionPlain",
    "vision": "VisionPlain",
    "embedding": "Embedding",
    "gguf": "GGUF",
}


def _toml_model_to_entry(index: int, model: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model = dict(model)
    kind_name = str(model.pop("kind", "auto")).lower()
    label = str(model.get("alias") or model.get("model_id") or f"models[{index}]")
    if kind_name not in _TOML_KINDS:
        raise ConfigError([f"model {label!r}: unknown kind {kind_name!r}; supported: {', '.join(sorted(_TOML_KINDS))}"])
    selector_name = _TOML_KINDS[kind_name]
    entry: dict[str, Any] = {}
    quant = model.pop("quantization", None) or {}
    # mistral.rs names the field in_situ_quant in older docs and quant in current ones.
    quant_key = next((k for k in ("in_situ_quant", "quant", "isq") if isinstance(quant, dict) and k in quant), None)
    if quant_key is not None:
        isq = str(quant[quant_key])
        # mistral.rs's TOML also takes a bare bit width ("4", "8").
        entry["in_situ_quant"] = {"2": "Q2K", "3": "Q3K", "4": "Q4K", "5": "Q5K", "6": "Q6K", "8": "Q8_0"}.get(isq, isq)
    for top in ("alias", "chat_template", "jinja_explicit", "num_device_layers", "ttl", "idle_timeout",
                "pinned", "preload", "kubernetes", "in_situ_quant", "engine", "engine_args", "tool_call_parser"):
        if top in model:
            entry[top] = model.pop(top)
    device = model.pop("device", None)
    if isinstance(device, dict) and "num_device_layers" in device:
        entry["num_device_layers"] = device["num_device_layers"]
    fmt = model.pop("format", None)
    if isinstance(fmt, dict):
        model.update(fmt)
    if selector_name == "GGUF" or "quantized_file" in model or "quantized_filename" in model:
        selector_name = "GGUF"
        if "quantized_file" in model:
            model["quantized_filename"] = model.pop("quantized_file")
        if "model_id" in model and "quantized_model_id" not in model:
            model["quantized_model_id"] = model.pop("model_id")
        if "tokenizer" in model:
            model["tok_model_id"] = model.pop("tokenizer")
    entry[selector_name] = model
    return label, entry


def _parse_toml_shape(data: dict[str, Any], default_model_id: str | None) -> ModelplexConfig:
    problems: list[str] = []
    pairs: list[tuple[str, Any]] = []
    for i, model in enumerate(data["models"]):
        if not isinstance(model, dict):
            problems.append(f"models[{i}]: expected a table")
            continue
        try:
            pairs.append(_toml_model_to_entry(i, model))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return parse_entries(pairs, default_model_id or data.get("default_model_id"))


def load_config_file(path: str | Path, default_model_id: str | None = None) -> ModelplexConfig:
    """Read and validate a JSON or TOML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file {str(p)!r}: {exc.strerror or exc}"]) from exc
    try:
        if p.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{p.name}: not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'}: {exc}"]) from exc
    return parse_config(data, default_model_id)
