"""The model-entry schema: the single source for the config file, the CRD, the router and the runtime.

This package imports only pydantic, so every component (including the torch-free router and the
operator) can validate the same entries.
"""

from modelplex_spec.config import ConfigError, ModelplexConfig, load_config_file, parse_config
from modelplex_spec.entry import (
    SUPPORTED_KINDS,
    DType,
    EmbeddingSpec,
    GGUFSpec,
    ModelEntry,
    ModelKind,
    PlainSpec,
    VisionPlainSpec,
)
from modelplex_spec.kubernetes import KubernetesSettings
from modelplex_spec.quant import QuantScheme, resolve_quant
from modelplex_spec.scaling import RoutingPolicy, Scaling, ScalingSettings

__all__ = [
    "SUPPORTED_KINDS",
    "ConfigError",
    "DType",
    "EmbeddingSpec",
    "GGUFSpec",
    "KubernetesSettings",
    "ModelEntry",
    "ModelKind",
    "ModelplexConfig",
    "PlainSpec",
    "QuantScheme",
    "RoutingPolicy",
    "Scaling",
    "ScalingSettings",
    "VisionPlainSpec",
    "load_config_file",
    "parse_config",
    "resolve_quant",
]
