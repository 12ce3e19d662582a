"""Start ``modelplex from-config`` as a real process on loopback and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from helpers.ports import free_port

FAKE_RUNTIME = Path(__file__).with_name("fake_runtime.py")


@dataclass
class RouterProcess:
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    seen_runtimes: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def events_path(self) -> Path:
        return self.workdir / "events"

    @property
    def control_path(self) -> Path:
        return self.workdir / "control.json"

    def set_control(self, control: dict[str, Any]) -> None:
        """Behaviour of fake runtimes started from now on (see fake_runtime.py)."""
        self.control_path.write_text(json.dumps(control))

    def events(self) -> list[str]:
        return self.events_path.read_text().splitlines() if self.events_path.exists() else []

    def starts(self, model: str) -> list[int]:
        """PIDs of the fake runtimes started for ``model``, in order."""
        return [int(line.split()[-1]) for line in self.events() if line.rsplit(" ", 1)[0] == model]

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, **kwargs)

    def get(self, path: str) -> httpx.Response:
        with self.client() as c:
            return c.get(path)

    def post(self, path: str, body: Any) -> httpx.Response:
        with self.client() as c:
            return c.post(path, json=body)

    def statuses(self) -> dict[str, str]:
        return {m["id"]: m.get("status", "") for m in self.get("/v1/models").json()["data"]}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of /metrics named ``name`` with these labels (0 when absent)."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.get("/metrics").text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def runtime_processes(self) -> list[psutil.Process]:
        """The runtimes this router runs now (its child processes)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self.seen_runtimes.setdefault(child.pid, child)
        return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; router log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the router; it must exit and leave no runtime process behind."""
        self.runtime_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"router did not exit on SIGTERM:\n{self.log_tail()}") from None
        _gone, alive = psutil.wait_procs(list(self.seen_runtimes.values()), timeout=10)
        for proc in alive:
            proc.kill()
        assert not alive, f"runtime processes outlived the router: {[p.pid for p in alive]}"


def start_router(
    workdir: Path,
    config: dict[str, Any] | str,
    *,
    fake: bool = True,
    control: dict[str, Any] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    command: str = "from-config",
    config_name: str = "config.json",
) -> RouterProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "modelplex", command]
    if command == "from-config":
        config_path = workdir / config_name
        config_path.write_text(config if isinstance(config, str) else json.dumps(config))
        cmd += ["--file", str(config_path)]
    cmd += ["-p", str(port), "--host", "127.0.0.1", *(args or [])]
    if "--spare-runtimes" not in cmd:
        # Spares (on by default) add a process per router and CPU while they warm up; the tests that are
        # about them ask for them.
        cmd += ["--spare-runtimes", "0"]
    if fake:
        cmd += ["--runtime-command", f"{sys.executable} {FAKE_RUNTIME}"]
    full_env = {
        **os.environ,
        "FAKE_RUNTIME_CONTROL": str(workdir / "control.json"),
        "FAKE_RUNTIME_EVENTS": str(workdir / "events"),
        "MODELPLEX_ROUTER_MONITOR_INTERVAL": "0.2",
        "MODELPLEX_ROUTER_LOADING_COMMENT_INTERVAL": "0.3",
        **(env or {}),
    }
    (workdir / "control.json").write_text(json.dumps(control or {}))
    log_path = workdir / "router.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    router = RouterProcess(url=f"http://127.0.0.1:{port}", proc=proc, workdir=workdir, log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"router exited with {proc.returncode}:\n{router.log_tail()}")
        try:
            if httpx.get(f"{router.url}/health", timeout=1).status_code == 200:
                return router
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    router.stop()
    raise AssertionError(f"router did not come up:\n{router.log_tail()}")
