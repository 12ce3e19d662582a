"""Which GPUs a local replica sees: one replica per GPU (or per group of GPUs) via CUDA_VISIBLE_DEVICES.

``detect_gpus`` (an edge: reads the environment, may run ``nvidia-smi``) finds this machine's GPUs once
at start; ``replica_devices`` (pure) gives replica slot ``i`` of a model its own devices, wrapping
around when there are more replicas than GPUs (they then share, and the log says so).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_router.local")

_NVIDIA_SMI_TIMEOUT_SECONDS = 5.0


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs replicas may use: ``CUDA_VISIBLE_DEVICES`` when set (the router's own restriction),
    else what ``nvidia-smi`` lists; none on a machine without NVIDIA GPUs."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_SECONDS,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s); local replicas get no GPU assignment", exc)
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def devices_per_replica(entry: ModelEntry) -> int:
    """GPUs one replica of the model uses: the devices its ``num_device_layers`` names, else one."""
    if not entry.num_device_layers:
        return 1
    ordinals = {item.split(":")[0].strip() for item in entry.num_device_layers if ":" in item}
    return max(1, len(ordinals))


def replica_devices(slot: int, gpus: Sequence[str], per_replica: int = 1) -> str:
    """CUDA_VISIBLE_DEVICES for replica ``slot``: the next ``per_replica`` GPUs, wrapping around."""
    if not gpus:
        return ""
    start = slot * per_replica
    return ",".join(gpus[(start + k) % len(gpus)] for k in range(per_replica))
