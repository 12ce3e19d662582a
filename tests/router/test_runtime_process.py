"""Stopping a runtime's whole process tree (``modelplex_router.runtime_process``), with real processes:
a runtime that starts children (as vLLM starts its engine core and workers), children that outlive it,
children that ignore SIGTERM and leave shared memory behind."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from modelplex_router import proctree
from modelplex_router.runtime_process import RuntimeProcess, spawn

# The parent starts a child, prints the child's pid, then waits (or exits at once: a crashed server whose
# worker lives on). The child maps a file in /dev/shm, as vLLM's processes do, and may ignore SIGTERM.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
    print(child.pid, flush=True)
    if sys.argv[4] == "exit":
        time.sleep(0.5)
        os_exit = __import__("os")._exit
        os_exit(0)
    time.sleep(120)
    """
)
CHILD = textwrap.dedent(
    """
    import mmap, signal, sys, time
    if sys.argv[2] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1], "w+b") as f:
        f.truncate(1 << 20)
        view = mmap.mmap(f.fileno(), 1 << 20)
        view[:] = b"x" * (1 << 20)
    time.sleep(120)
    """
)


async def _start(shm: Path, child_mode: str, parent_mode: str) -> tuple[RuntimeProcess, psutil.Process]:
    process = await spawn(
        [sys.executable, "-c", PARENT, CHILD, str(shm), child_mode, parent_mode],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    child = psutil.Process(int(await asyncio.wait_for(process.stdout.readline(), 30)))
    rt = RuntimeProcess(process=process, url="", started_at=time.monotonic(), label="test")
    rt.pump = asyncio.create_task(rt.pump_output())
    deadline = time.monotonic() + 30
    while str(shm) not in proctree.shared_memory_files([child.pid]):
        assert time.monotonic() < deadline, "the child did not map its shared memory"
        await asyncio.sleep(0.05)
    return rt, child


def _removed(path: Path) -> bool:
    return not path.exists()


@pytest.fixture
def shm(tmp_path: Path) -> Iterator[Path]:
    path = Path("/dev/shm") / f"modelplex-test-{tmp_path.name}"
    yield path
    path.unlink(missing_ok=True)


async def test_stop_ends_the_runtimes_children(shm: Path) -> None:
    rt, child = await _start(shm, "polite", "wait")
    assert child.pid in proctree.tree(rt.process.pid)
    # The tree's memory counts the child's (it touched 1 MiB of shared memory).
    assert proctree.tree_rss_bytes(rt.process.pid) > proctree.rss_bytes(rt.process.pid) + (1 << 20)
    await rt.terminate(grace=10)
    assert not proctree.alive(child.pid) and not proctree.alive(rt.process.pid)
    assert rt.process.returncode == -15  # SIGTERM was enough


async def test_children_that_outlive_a_dead_runtime_are_stopped_too(shm: Path) -> None:
    rt, child = await _start(shm, "polite", "exit")
    # (Process.wait() would also wait for the pipe the child inherited: look at the exit status.)
    deadline = time.monotonic() + 30
    while rt.running:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert proctree.alive(child.pid)  # orphaned: no longer below the runtime, still in its group
    assert child.pid in proctree.group(rt.process.pid)
    await rt.terminate(grace=10)
    assert not proctree.alive(child.pid)


async def test_a_child_ignoring_sigterm_is_killed_and_its_shared_memory_removed(shm: Path) -> None:
    rt, child = await _start(shm, "stubborn", "wait")
    started = time.monotonic()
    await rt.terminate(grace=0.5)
    assert time.monotonic() - started < 10
    assert not proctree.alive(child.pid)
    assert _removed(shm)
