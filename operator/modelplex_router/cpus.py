"""Which CPU cores a local replica may run on, on a machine without GPUs.

Engines on the CPU size their thread pools to the cores they may use: the modelplex runtime measures
all of them against all but one (``engine/threads.py``), vLLM's CPU worker binds one OpenMP thread to each
(``VLLM_CPU_OMP_THREADS_BIND=auto`` reads the process's affinity). Two replicas of a model that both see
every core therefore fight over the same cores. So the local backend gives replica slot ``i`` of a model
with ``maxReplicas`` > 1 its own share of the router's cores, the CPU counterpart of one GPU per replica
(``gpus.py``): ``replica_cpus`` (pure) splits the cores, ``pin_process`` (an edge) sets the affinity of
every thread of the replica's process, which its child processes inherit.

The share is by ``maxReplicas``, not by the replicas running now, so a replica's cores never change under
it (a model scaled down to one of two replicas runs on half the cores). Off with
``MODELPLEX_ROUTER_SPLIT_CPUS=false``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

log = logging.getLogger("modelplex_router.local")


def allowed_cpus() -> list[int]:
    """The cores this process may run on (the router's own restriction: a cgroup, taskset, ...)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return list(range(os.cpu_count() or 1))


def replica_cpus(slot: int, cpus: Sequence[int], replicas: int) -> list[int]:
    """The cores of replica ``slot`` of ``replicas``: contiguous, near-even shares of ``cpus`` (sizes differ
    by at most one); with more replicas than cores, one core each, wrapping around (they then share)."""
    cores = sorted(cpus)
    if replicas <= 1 or len(cores) < 2:
        return cores
    if replicas >= len(cores):
        return [cores[slot % len(cores)]]
    part = slot % replicas
    base, extra = divmod(len(cores), replicas)
    start = part * base + min(part, extra)
    return cores[start : start + base + (1 if part < extra else 0)]


def pin_process(pid: int, cpus: Sequence[int]) -> None:
    """Restrict every thread of process ``pid`` to ``cpus`` (threads and processes it starts later inherit
    it). A thread that ends meanwhile is skipped; a process that is gone raises ProcessLookupError."""
    tids: list[int] = [pid]
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        pass  # no /proc: the main thread only
    for tid in tids:
        try:
            os.sched_setaffinity(tid, set(cpus))
        except ProcessLookupError:
            if tid == pid:
                raise
