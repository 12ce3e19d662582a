"""One runtime process of the local backend: start it, drain its output, stop its whole process tree.

Each runtime runs in its own process group (so stopping it also ends anything it spawned: vLLM's engine
core and workers) and, on Linux, gets PR_SET_PDEATHSIG so it dies with the router even if the router is
SIGKILLed. Stopping waits until every process of the tree has ended, so its memory is free. Which runtime
to start and when is the backend's business (``local_backend``); this module only runs one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelplex_router import proctree
from modelplex_router.backend import BackendLoadError
from modelplex_spec.engines import TRANSFORMERS, Engine
from modelplex_spec.failure_reason import RuntimeOutput, describe_exit

log = logging.getLogger("modelplex_router.local")

_PR_SET_PDEATHSIG = 1
# A runtime line longer than this (a progress bar redrawn with carriage returns) is read in pieces.
LINE_LIMIT = 1 << 20
# How long the processes of a runtime may take to vanish once SIGKILLed (the kernel frees them at once).
TREE_EXIT_SECONDS = 5.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def spawn(
    command: list[str],
    *,
    stdin: int,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.PIPE,
    base_env: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    what: str = "the runtime",
) -> asyncio.subprocess.Process:
    """Start ``command`` in a new session; ``env`` is added to ``base_env`` (default: this process's)."""
    environment = dict(base_env) if base_env is not None else None
    if env:
        environment = {**(base_env if base_env is not None else os.environ), **env}
    try:
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            env=environment,
            limit=LINE_LIMIT,
        )
    except OSError as exc:
        raise BackendLoadError(f"cannot start {what} ({command[0]}): {exc}") from exc


@dataclass
class RuntimeProcess:
    process: asyncio.subprocess.Process
    url: str
    started_at: float
    label: str
    engine: Engine = TRANSFORMERS
    # What it said about why it ended (its own report, or its engine's reader of its output).
    output: RuntimeOutput = field(default_factory=RuntimeOutput)
    ready: bool = False
    stopping: bool = False
    warm: bool = False  # a spare that has finished warming up
    pump: asyncio.Task[None] | None = None
    stdout_pump: asyncio.Task[None] | None = None
    # As one replica of a model (local_backend): its id, its GPU slot, whether the backend took it away
    # on purpose (scaled down, stopped) rather than it ending on its own, and why the backend ended it.
    replica_id: str = ""
    slot: int = 0
    retired: bool = False
    exit_note: str | None = None
    ready_task: asyncio.Task[None] | None = None
    # Set by every line the runtime writes: a runtime logs when its model is ready, so the readiness
    # poll can look at once instead of waiting out its back-off.
    activity: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def exit_reason(self) -> str:
        if self.exit_note:
            return self.exit_note
        return describe_exit(self.process.returncode, self.output.reason(), self.engine.title)

    async def pump_output(self) -> None:
        """Keep the pipe drained (a full pipe would block the runtime) and the last lines for errors;
        returns once the runtime has exited."""
        # stderr, or stdout when the engine's stderr goes there too.
        stream = self.process.stderr if self.process.stderr is not None else self.process.stdout
        assert stream is not None
        logger = logging.getLogger(f"modelplex_router.runtime.{self.label}")
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over the limit: take what is buffered as one line
                line = await stream.read(LINE_LIMIT)
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip()
            self.output.feed(text)
            self.activity.set()
            logger.debug("%s", text, extra={"model": self.label})
        self.close_stdin()
        await self.process.wait()

    def close_stdin(self) -> None:
        # asyncio's Process.wait() also waits for every pipe to close, the spare's stdin included.
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` (at once when 0: a frozen runtime would not
        act on SIGTERM); returns once every process of the tree has ended (or ``TREE_EXIT_SECONDS`` after
        the SIGKILL, with a warning).

        The group's members are taken first, so processes the runtime started are waited for even when
        the runtime itself died before them (vLLM's workers can outlive a crashed engine core). Shared
        memory files they mapped and left behind (vLLM's are removed by its resource tracker, unless that
        had to be killed too) are removed, so that memory is free as well.
        """
        self.stopping = True
        pid = self.process.pid
        pids = sorted({*proctree.group(pid), *(proctree.tree(pid) if self.running else ())})
        shared = proctree.shared_memory_files(pids)
        if grace > 0 and proctree.any_alive(pids):
            self.signal_group(signal.SIGTERM)
            if not await self._tree_exits(pids, grace):
                log.warning(
                    "%s for %s ignored SIGTERM for %.0fs; killing it",
                    self.engine.title, self.label, grace,
                    extra={"model": self.label},
                )  # fmt: skip
        # Also kill anything left in the group (children of the runtime), then reap.
        self.signal_group(signal.SIGKILL)
        self.close_stdin()
        await self.process.wait()
        if not await self._tree_exits(pids, TREE_EXIT_SECONDS):
            log.warning(
                "processes of %s for %s still run after SIGKILL: %s",
                self.engine.title, self.label, [p for p in pids if proctree.alive(p)],
                extra={"model": self.label},
            )  # fmt: skip
        self._remove_leftovers(shared)
        if self.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pump, 2.0)

    def _remove_leftovers(self, shared: set[str]) -> None:
        left = sorted(path for path in shared if os.path.exists(path))
        for path in left:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if left:
            log.info(
                "removed %d shared-memory files %s for %s left behind",
                len(left), self.engine.title, self.label,
                extra={"model": self.label, "files": left},
            )  # fmt: skip

    async def _tree_exits(self, pids: list[int], seconds: float) -> bool:
        """Wait (up to ``seconds``) until the runtime and every process it started have ended."""
        deadline = time.monotonic() + seconds
        try:
            await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            return False
        while proctree.any_alive(p for p in pids if p != self.process.pid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def memory_bytes(self) -> int | None:
        """Resident memory of the runtime and every process it started."""
        return proctree.tree_rss_bytes(self.process.pid)
