"""Plays the Deployment controller + kubelet for the emulator: replicas > 0 starts a real runtime process.

Each model's runtime is the router tests' fake runtime (tests/router/fake_runtime.py), listening on a
port chosen in advance so the router's Service URL override can point at it. Once the runtime
answers /ready, the Deployment's status reports a ready replica; scaling to zero stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "router" / "fake_runtime.py"



@dataclass
class FakeKubelet:
    cluster: Any
    deployments: Any  # the kmock resource
    namespace: str
    ports: dict[str, int]  # Deployment name -> port
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def _spec(self, name: str) -> dict[str, Any] | None:
        key = (self.deployments, self.namespace, name)
        if key not in self.cluster.objects or self.cluster.objects[key].deleted:
            return None
        return self.cluster.objects[key].raw

    async def _start(self, name: str, dep: dict[str, Any]) -> None:
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        model_json = args[args.index("--model-json") + 1]
        served = args[args.index("--served-model-name") + 1]
        json.loads(model_json)  # what the operator put in the pod template must be valid
        self.processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, str(FAKE_RUNTIME), "--host", "127.0.0.1", "--port", str(self.ports[name]),
            "--model-json", model_json, "--served-model-name", served,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        self.starts.append(name)

    async def _ready(self, name: str) -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{self.ports[name]}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    def _report(self, name: str, replicas: int, ready: int) -> None:
        status = (self._spec(name) or {}).get("status") or {}
        if status.get("replicas") != replicas or status.get("readyReplicas") != ready:
            self.cluster.objects[self.deployments, self.namespace, name].patch(
                {"status": {"replicas": replicas, "readyReplicas": ready}})

    async def _stop(self, name: str) -> None:
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _loop(self) -> None:
        while True:
            for name in self.ports:
                dep = self._spec(name)
                if dep is None:
                    continue
                want = int(dep.get("spec", {}).get("replicas") or 0)
                if want > 0 and name not in self.processes:
                    await self._start(name, dep)
                    self._report(name, 1, 0)
                elif want > 0 and await self._ready(name):
                    self._report(name, 1, 1)
                elif want == 0 and name in self.processes:
                    await self._stop(name)
                    self._report(name, 0, 0)
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> FakeKubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in list(self.processes):
            await self._stop(name)
