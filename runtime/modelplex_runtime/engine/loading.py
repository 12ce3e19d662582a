"""Where weights come from and what they become: device, dtype, hub/local resolution, chat templates."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from modelplex_runtime.device_layers import build_device_map
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_runtime.engine")
T = TypeVar("T")

_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def resolve_device(option: str) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(option)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {option!r} was asked for but CUDA is not available")
    return device


def kv_cache_budget(device: torch.device, requested: int | None) -> int:
    """Bytes the KV cache may take: ``requested``, else a quarter of the host's memory on CPU (at most
    8 GiB) or half of the device memory still free after the weights on CUDA."""
    if requested:
        return requested
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        total = 8 << 30
    return min(total // 4, 8 << 30)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPUs; on CPU, f32 is the fast path for most kernels.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def device_map_for(entry: ModelEntry, device: torch.device, num_layers: int | None) -> dict[str, Any] | str | None:
    """A multi-device map when num_device_layers is set and several CUDA devices exist."""
    if entry.num_device_layers and device.type == "cuda" and torch.cuda.device_count() > 1 and num_layers:
        return build_device_map(entry.num_device_layers, num_layers, torch.cuda.device_count())
    return None


def hub_kwargs(entry: ModelEntry) -> dict[str, Any]:
    sel = entry.selector
    kwargs: dict[str, Any] = {}
    if sel.revision:
        kwargs["revision"] = sel.revision
    if sel.hf_cache_path:
        kwargs["cache_dir"] = sel.hf_cache_path
    token = os.environ.get("HF_TOKEN")
    if token:
        kwargs["token"] = token
    return kwargs


def from_pretrained(load: Callable[..., T], source: str, **kwargs: Any) -> T:
    """Load from a local directory, else the hub cache (offline), else download."""
    if Path(source).expanduser().exists():
        return load(str(Path(source).expanduser()), **{k: v for k, v in kwargs.items() if k not in ("revision", "token")})
    try:
        return load(source, local_files_only=True, **kwargs)
    except OSError:
        log.info("not in the hub cache; downloading", extra={"source": source})
        return load(source, **kwargs)


def chat_template_override(entry: ModelEntry) -> str | None:
    """jinja_explicit (a file) wins over chat_template (a .jinja/.json file or a literal template)."""
    if entry.jinja_explicit:
        path = Path(entry.jinja_explicit).expanduser()
        if not path.is_file():
            raise ValueError(f"jinja_explicit file {entry.jinja_explicit!r} does not exist")
        return path.read_text(encoding="utf-8")
    value = entry.chat_template
    if not value:
        return None
    path = Path(value).expanduser()
    if "{" not in value and path.suffix in (".jinja", ".j2", ".json", ".txt"):
        if not path.is_file():
            raise ValueError(f"chat_template file {value!r} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            template = data.get("chat_template") if isinstance(data, dict) else None
            if not isinstance(template, str):
                raise ValueError(f"chat_template file {value!r} has no string 'chat_template' key")
            return template
        return text
    return value


def context_length(config: Any, entry: ModelEntry, tokenizer: Any | None = None) -> int:
    candidates = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions", "max_seq_len")]
    native = next((c for c in candidates if isinstance(c, int) and c > 0), None)
    if native is None and tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 10**7:
        native = tokenizer.model_max_length
    native = native or 2048
    return min(entry.max_seq_len, native) if entry.max_seq_len else native


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}.get(dtype, str(dtype))
