"""A causal LM's linear layers on CPU: oneDNN with each weight reordered once at load, for multi-token steps.

``nn.Linear`` on CPU calls MKL's sgemm, which reads the weight in its row-major layout on every call;
oneDNN's matmul reads a weight laid out once in its own blocked format (vLLM's CPU build does the same).
On this project's 2-core AVX2 machine a 16-row product with a 4096 x 1024 weight ran 1.3x (1 thread) to
2.4x (2 threads) faster on oneDNN, 64 rows 1.7-1.8x, 512 rows 1.3-1.6x; a single row ran 0.8x (1 thread)
to 0.3x (2 threads). So a float32 layer keeps its plain weight for single-token steps (a lone decoding
sequence) and takes the reordered one for steps of ``MIN_ROWS`` tokens or more: the cost is a second
copy of every reordered weight in host memory.

bfloat16 weights are reordered too where oneDNN runs bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``:
AVX-512 BF16 / AMX CPUs), and used at every row count: on a 2-core Xeon with AMX a 2048 -> 5632 product ran
1.68x faster for 1 row, 1.55x for 4, 1.44x for 16, 1.99x for 64 and 1.45x for 512 than ``F.linear`` on the
plain bf16 weight, with identical results (``F.linear`` lays the weight out anew on every call). Without
them the runtime's bf16 steps ran at 0.52x vLLM's CPU build at concurrency 16 on a hidden-2048 model.

Only plain weights that no other module shares are reordered (a tied ``lm_head`` keeps the embedding's);
the layer stays an ``nn.Linear`` (same parameters and ``state_dict``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("modelplex_runtime.engine")

MIN_ROWS = 2  # float32: fewer rows run on the plain weight (see above); bfloat16 runs every row count on oneDNN


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def reorderable_dtypes() -> tuple[torch.dtype, ...]:
    """The weight dtypes this CPU's oneDNN takes: float32, and bfloat16 where it runs it natively."""
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if bf16 is not None and bf16() else (torch.float32,)


class OneDNNLinear(torch.nn.Linear):
    """An ``nn.Linear`` that also holds its weight reordered for oneDNN, used for inputs of ``MIN_ROWS`` rows or more."""

    packed: torch.Tensor
    min_rows: int

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> OneDNNLinear:
        layer = cls.__new__(cls)
        torch.nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().contiguous(), None)
        layer.min_rows = MIN_ROWS if linear.weight.dtype == torch.float32 else 1
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < self.min_rows * self.in_features or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def use_onednn_linears(model: torch.nn.Module) -> int:
    """Give the model's reorderable ``nn.Linear`` layers a oneDNN weight; returns how many."""
    if not available():
        return 0
    dtypes = reorderable_dtypes()
    shared: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        shared[p.data_ptr()] = shared.get(p.data_ptr(), 0) + 1
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            w = child.weight
            if type(w.data) is not torch.Tensor or w.dtype not in dtypes or w.device.type != "cpu":
                continue  # quantized (tensor subclasses), other dtypes, other devices
            if shared.get(w.data_ptr(), 0) > 1:
                continue  # tied to another module's weight
            setattr(module, name, OneDNNLinear.from_linear(child))
            replaced += 1
    log.info("linear layers on oneDNN", extra={"layers": replaced, "dtypes": [str(d) for d in dtypes]})
    return replaced
