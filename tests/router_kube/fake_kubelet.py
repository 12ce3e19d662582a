"""Plays the Deployment controller + kubelet for the emulator: replicas > 0 starts a real runtime process.

Each model's runtime is the router tests' fake runtime (tests/router/fake_runtime.py), listening on a
port chosen in advance so the router's Service URL override can point at it. The runtime has a Pod
object (with the Deployment's selector labels) for as long as its process lives. Once the runtime
answers /ready, the Deployment's status reports a ready replica; scaling to zero marks the pod as
terminating, stops the process (``slow_stop`` seconds later for a Deployment named there: a runtime
that takes its time to drain) and then deletes the pod. ``crash`` kills a runtime and reports the
Deployment failing, as the Deployment controller would for a crash-looping pod; ``freeze`` stops one
(SIGSTOP) and ``restart`` does what a failing liveness probe makes the kubelet do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
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
    pods: Any = None  # the kmock Pod resource
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    slow_stop: dict[str, float] = field(default_factory=dict)
    _stopping: dict[str, asyncio.Task[None]] = field(default_factory=dict)
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
        if self.pods is not None:
            labels = dep["spec"]["selector"]["matchLabels"]
            self.cluster.objects[self.pods, self.namespace, self._pod_name(name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self._pod_name(name), "namespace": self.namespace, "labels": labels},
                "status": {"phase": "Running"},
            }

    def _pod_name(self, name: str) -> str:
        return f"{name}-pod{self.starts.count(name)}"

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
        pod = self._pod_name(name)
        if self.pods is not None:
            self.cluster.objects[self.pods, self.namespace, pod].patch(
                {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        await asyncio.sleep(self.slow_stop.get(name, 0))
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self.pods is not None:
            del self.cluster.objects[self.pods, self.namespace, pod]

    def pod_exists(self, name: str) -> bool:
        key = (self.pods, self.namespace, self._pod_name(name))
        return key in self.cluster.objects and not self.cluster.objects[key].deleted

    def crash(self, name: str) -> None:
        """The runtime dies and cannot come back: the Deployment reports a replica failure."""
        with contextlib.suppress(ProcessLookupError):
            self.processes[name].kill()
        self.cluster.objects[self.deployments, self.namespace, name].patch({"status": {"conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "CrashLoopBackOff",
             "message": f"pod {self._pod_name(name)}: the runtime crashed (simulated)"}]}})

    def freeze(self, name: str) -> None:
        """The runtime stops answering (SIGSTOP) while its pod still counts as ready."""
        self.processes[name].send_signal(signal.SIGSTOP)

    async def restart(self, name: str) -> None:
        """What a failing liveness probe makes the kubelet do: kill the container and start it again."""
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        self._report(name, 1, 0)

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
                elif want == 0 and name in self.processes and name not in self._stopping:
                    # Each pod terminates on its own time: a slow one does not hold up the others.
                    self._stopping[name] = asyncio.create_task(self._stop_and_report(name))
            await asyncio.sleep(0.1)

    async def _stop_and_report(self, name: str) -> None:
        # As the Deployment controller does: a terminating pod no longer counts, though it still runs.
        self._report(name, 0, 0)
        try:
            await self._stop(name)
            self.cluster.objects[self.deployments, self.namespace, name].patch({"status": {"conditions": []}})
        finally:
            del self._stopping[name]

    async def __aenter__(self) -> FakeKubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._stopping.values()):
            with contextlib.suppress(BaseException):
                await task
        for name in list(self.processes):
            await self._stop(name)
