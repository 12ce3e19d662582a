"""The local backend: each model's runtime is an OS process on this machine (the embedded default).

Each runtime runs in its own process group (so stopping it also ends anything it spawned) and, on
Linux, gets PR_SET_PDEATHSIG so it dies with the router even if the router is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import httpx

from modelplex_router.backend import BackendLoadError, BackendObservation
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_router.local")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of a process from /proc (None off Linux or once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Runtime:
    process: asyncio.subprocess.Process
    url: str
    started_at: float
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    ready: bool = False
    stopping: bool = False
    pump: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def exit_reason(self) -> str:
        code = self.process.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), None)
        return f"the runtime {how}: {last}" if last else f"the runtime {how}"


class LocalProcessBackend:
    """Runs ``runtime_command --host H --port P --model-json J --served-model-name ID`` per model."""

    def __init__(
        self, runtime_command: list[str], host: str = "127.0.0.1", env: dict[str, str] | None = None
    ) -> None:
        self._command = list(runtime_command)
        self._host = host
        self._env = env
        self._runtimes: dict[str, _Runtime] = {}
        self._failures: dict[str, str] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        rt = self._runtimes.get(api_id)
        if rt is not None and rt.running and not rt.stopping:
            return
        if rt is not None:
            await self._reap(api_id, rt, grace=0)
        port = _free_port(self._host)
        args = [
            *self._command,
            "--host", self._host,
            "--port", str(port),
            "--model-json", entry.model_dump_json(exclude_none=True),
            "--served-model-name", api_id,
        ]  # fmt: skip
        log.info("starting runtime for %s on port %d", api_id, port, extra={"model": api_id, "port": port})
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                env=self._env,
            )
        except OSError as exc:
            raise BackendLoadError(f"cannot start the runtime ({' '.join(self._command)}): {exc}") from exc
        rt = _Runtime(process=process, url=f"http://{self._host}:{port}", started_at=time.monotonic())
        rt.pump = asyncio.create_task(self._pump_stderr(api_id, rt), name=f"stderr {api_id}")
        self._runtimes[api_id] = rt
        self._failures.pop(api_id, None)

    async def _pump_stderr(self, api_id: str, rt: _Runtime) -> None:
        """Keep the pipe drained (a full pipe would block the runtime) and the last lines for errors."""
        assert rt.process.stderr is not None
        runtime_log = logging.getLogger(f"modelplex_router.runtime.{api_id}")
        while True:
            line = await rt.process.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            rt.stderr_tail.append(text)
            runtime_log.debug("%s", text, extra={"model": api_id})

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> str:
        rt = self._runtimes.get(api_id)
        if rt is None:
            raise BackendLoadError("the runtime was not started")
        deadline = time.monotonic() + timeout_seconds
        delay = 0.05
        while True:
            if not rt.running:
                # Let the stderr pump read the runtime's last words before reporting them.
                if rt.pump is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(rt.pump), 2.0)
                reason = rt.exit_reason()
                self._failures[api_id] = reason
                raise BackendLoadError(reason)
            try:
                resp = await self._http.get(f"{rt.url}/ready")
                if resp.status_code == 200:
                    rt.ready = True
                    return rt.url
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise BackendLoadError(f"the runtime was not ready within {timeout_seconds:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(rt.process.wait()), delay)
            delay = min(delay * 1.5, 0.5)

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        rt = self._runtimes.get(api_id)
        if rt is None:
            return
        await self._reap(api_id, rt, grace_seconds)

    async def _reap(self, api_id: str, rt: _Runtime, grace: float) -> None:
        rt.stopping = True
        pid = rt.process.pid
        if rt.running:
            self._signal_group(pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(rt.process.wait(), grace)
            except TimeoutError:
                log.warning(
                    "runtime for %s ignored SIGTERM for %.0fs; killing it",
                    api_id,
                    grace,
                    extra={"model": api_id},
                )
        # Also kill anything left in the group (children of the runtime), then reap.
        self._signal_group(pid, signal.SIGKILL)
        await rt.process.wait()
        if rt.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(rt.pump, 2.0)
        if self._runtimes.get(api_id) is rt:
            del self._runtimes[api_id]

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    async def observe(self, api_id: str) -> BackendObservation:
        rt = self._runtimes.get(api_id)
        if rt is None:
            failure = self._failures.get(api_id)
            return BackendObservation(running=False, ready=False, failed=failure is not None, message=failure)
        if not rt.running:
            return BackendObservation(
                running=False, ready=False, failed=not rt.stopping, message=rt.exit_reason(), url=rt.url
            )
        return BackendObservation(
            running=True, ready=rt.ready, url=rt.url, memory_bytes=_rss_bytes(rt.process.pid)
        )

    def pid(self, api_id: str) -> int | None:
        """The runtime's process id (for logs and tests)."""
        rt = self._runtimes.get(api_id)
        return rt.process.pid if rt is not None and rt.running else None

    async def close(self) -> None:
        await asyncio.gather(
            *(self._reap(api_id, rt, grace=5.0) for api_id, rt in list(self._runtimes.items())),
            return_exceptions=True,
        )
        await self._http.aclose()
