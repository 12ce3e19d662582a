"""Make a config's explicitly relative model paths (``./x``, ``../x``) relative to the config file."""

from __future__ import annotations

from pathlib import Path

from modelplex_spec import ModelEntry, ModelplexConfig

_PATH_FIELDS = ("model_id", "quantized_model_id", "tok_model_id", "tokenizer_json")
_TOP_PATH_FIELDS = ("chat_template", "jinja_explicit")


def _is_relative_path(value: object) -> bool:
    return isinstance(value, str) and (value.startswith("./") or value.startswith("../"))


def _rebase(entry: ModelEntry, base: Path) -> ModelEntry:
    selector = entry.selector
    sel_update = {
        name: str((base / getattr(selector, name)).resolve())
        for name in _PATH_FIELDS
        if _is_relative_path(getattr(selector, name, None))
    }
    top_update = {
        name: str((base / getattr(entry, name)).resolve())
        for name in _TOP_PATH_FIELDS
        if _is_relative_path(getattr(entry, name))
    }
    if not sel_update and not top_update:
        return entry
    # The API id must not change with the directory the router starts in: keep it as written.
    if entry.alias is None and {"model_id", "quantized_model_id"} & sel_update.keys():
        top_update["alias"] = entry.pipeline_name
    return entry.model_copy(update={entry.kind.value: selector.model_copy(update=sel_update), **top_update})


def rebase_relative_paths(config: ModelplexConfig, config_file: str | Path) -> ModelplexConfig:
    """Paths written ``./models/x`` in a config at ``/srv/config.json`` become ``/srv/models/x``."""
    base = Path(config_file).resolve().parent
    models = [m.model_copy(update={"entry": _rebase(m.entry, base)}) for m in config.models]
    return config.model_copy(update={"models": models})
