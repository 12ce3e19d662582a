"""Starting, watching and stopping the processes a benchmark measures (routers, peers, backends)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import psutil

PEER_BIN_ENV = "MODELPLEX_BENCH_PEER_BIN"
DEFAULT_PEER_BIN = Path(__file__).resolve().parent.parent / ".venv-peers" / "bin"  # made by benchmarks.peers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_tool(name: str) -> str | None:
    """A peer's executable: in $MODELPLEX_BENCH_PEER_BIN when set (only there), else in .venv-peers/bin,
    this Python's bin folder, or on PATH."""
    if os.environ.get(PEER_BIN_ENV):
        path = Path(os.environ[PEER_BIN_ENV]) / name
        return str(path) if path.exists() else None
    for folder in (DEFAULT_PEER_BIN, Path(sys.executable).parent):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


class Proc:
    """A child process in its own process group, its output in a temporary log file."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = argv
        self.url = ""  # where it serves, once known
        self.log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                      env={**os.environ, **(env or {})}, start_new_session=True)
        self.ps = psutil.Process(self.popen.pid)

    def tail(self, chars: int = 1500) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout: float, ok: Iterable[int] = (200,)) -> float:
        """Poll ``url`` until it answers one of ``ok``; seconds since the process started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{Path(self.argv[0]).name} exited with {self.popen.returncode}: {self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code in tuple(ok):
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{url} not ready after {timeout:g}s: {self.tail()}")

    def tree(self, exclude: Iterable[int] = ()) -> list[psutil.Process]:
        skip = set(exclude)
        try:
            procs = [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [p for p in procs if p.pid not in skip]

    def cpu_seconds(self, exclude: Iterable[int] = ()) -> float:
        total = 0.0
        for p in self.tree(exclude):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self, exclude: Iterable[int] = ()) -> int:
        total = 0
        for p in self.tree(exclude):
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, grace: float = 15.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            except ProcessLookupError:
                pass
        # Whatever the server left in its group (workers still shutting down) must not run into the next
        # measurement on these 2 cores.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def child_port(parent: Proc) -> tuple[int, int] | None:
    """(pid, port) of the first child started with ``--port P`` (a runtime the router started)."""
    for child in parent.tree():
        try:
            argv = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if child.pid != parent.ps.pid and "--port" in argv:
            return child.pid, int(argv[argv.index("--port") + 1])
    return None


def start_server(argv: Callable[[int], list[str]], health_path: str, timeout: float,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> Proc:
    """Start a server on a free loopback port (``argv(port)``) and wait until ``health_path`` answers 200;
    a server that never does is stopped before the error propagates."""
    port = free_port()
    proc = Proc(argv(port), env=env, cwd=cwd)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(proc.url + health_path, timeout)
    except Exception:
        proc.stop()
        raise
    return proc
