"""In-situ weight quantization at load time through torchao.

mistral.rs's ISQ names are resolved by modelplex_spec.resolve_quant to a weight-only scheme; this
module applies it to every nn.Linear except the output head (quantizing the head costs the most
quality for the least memory).
"""

from __future__ import annotations

import torch

from modelplex_spec import QuantScheme


class QuantizationError(ValueError):
    pass


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers, counting quantized tensors by their real storage."""
    total = 0
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += _tensor_bytes(t)
    return total


def _tensor_bytes(t: torch.Tensor) -> int:
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None and type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    data = t.data if isinstance(t, torch.nn.Parameter) else t
    if type(data) is not torch.Tensor:
        return _tensor_bytes(data)
    return data.numel() * data.element_size()


def check_supported(scheme: QuantScheme, device: torch.device) -> None:
    """Refuse, before any weight is loaded, a scheme this device cannot run."""
    if scheme is QuantScheme.FP8_WEIGHT_ONLY and device.type != "cuda":
        raise QuantizationError("in_situ_quant FP8 needs a CUDA GPU (compute capability 8.9+); on CPU use Q8_0 (int8)")
    if scheme is QuantScheme.INT4_WEIGHT_ONLY and device.type != "cuda":
        raise QuantizationError(
            "4-bit in_situ_quant (Q4K, Q4_0, HQQ4, ...) needs a CUDA GPU: torchao's int4 weight-only kernels "
            "have no CPU build here; on CPU use an 8-bit name (Q8_0, Q8K, HQQ8)"
        )


def quantize_model(model: torch.nn.Module, scheme: QuantScheme, device: torch.device) -> None:
    check_supported(scheme, device)
    try:
        from torchao.quantization import quantize_
    except ImportError as exc:  # pragma: no cover - torchao is in the runtime extra
        raise QuantizationError("in_situ_quant needs the torchao package (pip install 'modelplex[runtime]')") from exc
    from torchao.quantization import Float8WeightOnlyConfig, Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if scheme is QuantScheme.INT8_WEIGHT_ONLY:
        config = Int8WeightOnlyConfig()
    elif scheme is QuantScheme.INT4_WEIGHT_ONLY:
        config = Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    else:
        config = Float8WeightOnlyConfig()
    head = getattr(model, "get_output_embeddings", lambda: None)()

    def is_target(module: torch.nn.Module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and module is not head

    quantize_(model, config, filter_fn=is_target)
