"""Local replicas on a machine without GPUs each get their own share of the cores (``cpus.py``): the split
is pure; pinning is checked on a real child process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelplex_router.cpus import pin_process, replica_cpus


def test_one_replica_or_one_core_keeps_every_core() -> None:
    assert replica_cpus(0, [3, 1, 2, 0], 1) == [0, 1, 2, 3]
    assert replica_cpus(1, [5], 2) == [5]


@pytest.mark.parametrize("cores", [2, 3, 4, 7, 16])
@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_replicas_split_the_cores_without_overlap(cores: int, replicas: int) -> None:
    cpus = list(range(10, 10 + cores))
    shares = [replica_cpus(slot, cpus, replicas) for slot in range(replicas)]
    if replicas <= cores:
        assert sorted(c for share in shares for c in share) == cpus  # every core, each once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # near-even
        assert all(share == sorted(share) and share[-1] - share[0] == len(share) - 1 for share in shares)
    else:  # more replicas than cores: one core each, wrapping around
        assert shares == [[cpus[slot % cores]] for slot in range(replicas)]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux feature")
def test_pinning_restricts_a_running_process_and_what_it_starts() -> None:
    mine = sorted(os.sched_getaffinity(0))
    target = mine[-1:]
    # A child with a thread of its own, which starts a grandchild after being pinned and reports its cores.
    code = (
        "import os, subprocess, sys, threading, time\n"
        "t = threading.Thread(target=time.sleep, args=(30,), daemon=True); t.start()\n"
        "sys.stdout.write('up\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
        "print(sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(t.native_id)),\n"
        "      subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'],\n"
        "                     capture_output=True, text=True).stdout.strip(), flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "up"
        pin_process(child.pid, target)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    # the main thread, the thread that was already running, and the process started after the pinning
    assert out.strip() == f"{target} {target} {target}"


def test_pinning_a_process_that_is_gone_raises() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        pin_process(child.pid, [0])
