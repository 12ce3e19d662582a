"""In-situ quantization names (mistral.rs's ISQ vocabulary) mapped to schemes we can really run.

mistral.rs names GGML-style block formats (Q4K, Q8_0, ...), HQQ and FP8. PyTorch has no kernels for the
GGML block layouts, so each name maps to the nearest weight-only scheme of the same bit width.
"""

from __future__ import annotations

from enum import StrEnum


class QuantScheme(StrEnum):
    INT8_WEIGHT_ONLY = "int8_weight_only"
    INT4_WEIGHT_ONLY = "int4_weight_only"
    FP8_WEIGHT_ONLY = "fp8_weight_only"


_BITS4 = ["Q2K", "Q3K", "Q4_0", "Q4_1", "Q4K", "Q5_0", "Q5_1", "Q5K", "HQQ4", "AFQ2", "AFQ3", "AFQ4"]
_BITS8 = ["Q6K", "Q8_0", "Q8_1", "Q8K", "HQQ8", "AFQ6", "AFQ8"]
_FP8 = ["FP8"]

ISQ_NAMES: dict[str, QuantScheme] = {
    **{name: QuantScheme.INT4_WEIGHT_ONLY for name in _BITS4},
    **{name: QuantScheme.INT8_WEIGHT_ONLY for name in _BITS8},
    **{name: QuantScheme.FP8_WEIGHT_ONLY for name in _FP8},
}


def _normalize(name: str) -> str:
    return name.strip().upper()


def resolve_quant(name: str) -> QuantScheme:
    """Map an ISQ name (case-insensitive) or a scheme name to the scheme we run; ValueError if unknown."""
    key = _normalize(name)
    if key in ISQ_NAMES:
        return ISQ_NAMES[key]
    for scheme in QuantScheme:
        if name.strip().lower() == scheme.value:
            return scheme
    known = ", ".join(sorted(ISQ_NAMES)) + ", " + ", ".join(s.value for s in QuantScheme)
    raise ValueError(f"unknown in_situ_quant {name!r}; supported: {known}")
