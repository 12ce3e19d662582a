"""Start a real modelplex runtime process on a free loopback port, wait for /ready, stop it.

    with start_runtime({"Plain": {"model_id": str(tiny_llama_dir)}}) as rt:
        httpx.get(rt.url + "/v1/models")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import IO, Any

import httpx

from helpers.ports import free_port


class RuntimeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log

    def logs(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"runtime not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/health", timeout=2)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"runtime not listening after {timeout}s")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate(timeout=10)
        self._log.close()

    def __enter__(self) -> RuntimeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def launch_runtime(
    entry: dict[str, Any], *, served_name: str | None = None, extra_args: Iterable[str] = (), port: int | None = None
) -> RuntimeProcess:
    """Start the process without waiting for it to be ready."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "modelplex_runtime", "--host", "127.0.0.1", "--port", str(port),
           "--model-json", json.dumps(entry)]
    if served_name:
        cmd += ["--served-model-name", served_name]
    cmd += list(extra_args)
    log = tempfile.TemporaryFile()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return RuntimeProcess(proc, port, log)


def start_runtime(
    entry: dict[str, Any], *, served_name: str | None = None, extra_args: Iterable[str] = (), timeout: float = 120.0
) -> RuntimeProcess:
    """Start a runtime and wait until /ready answers 200."""
    rt = launch_runtime(entry, served_name=served_name, extra_args=extra_args)
    try:
        rt.wait_ready(timeout)
    except BaseException:
        rt.stop()
        raise
    return rt
