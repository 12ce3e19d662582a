"""Plays the Deployment controller, the kubelet and the EndpointSlice controller for the emulator (a fake,
since no cluster runs here): a Deployment's ``spec.replicas`` pods are real runtime processes.

Each pod is one process listening on the Deployment's port (chosen in advance) at its own loopback
address: the first pod of a Deployment on 127.0.0.1 (so a Service URL override at 127.0.0.1:port
reaches it), the next on 127.0.0.2, and so on, as pods have their own IPs on a cluster. ``runtime``
picks the process: ``"fake"`` (tests/router/fake_runtime.py, for failure-mode tests) or ``"real"``
(the pod template's own command, ``python -m modelplex_runtime ...``, with the pod's address).
A pod has a Pod object (the Deployment's selector labels, its address) for as long as its process
lives. Once its runtime answers /ready, the pod is ready: the Deployment's status counts it (written through the
API's status subresource, as the Deployment controller does, so watches see it), and the
Deployment's EndpointSlice (``kubernetes.io/service-name: <Deployment name>``, written through the API
so watches see it) lists it ready; a pod going away is listed ``terminating`` until its process has
exited. Scaling down terminates the newest pods (``slow_stop`` seconds later for a Deployment named
there: a runtime that takes its time to drain); ``take_out`` drops a pod from the slice while it keeps
running; ``crash`` kills a Deployment's runtimes and reports it failing, as the Deployment controller
would for a crash-looping pod; ``freeze`` stops one (SIGSTOP) and ``restart`` does what a failing
liveness probe makes the kubelet do.
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
SLICES_PATH = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"


@dataclass
class FakePod:
    name: str
    deployment: str
    address: str
    port: int
    process: asyncio.subprocess.Process
    ready: bool = False
    terminating: bool = False
    in_slice: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


@dataclass
class FakeKubelet:
    cluster: Any
    deployments: Any  # the kmock resource
    namespace: str
    ports: dict[str, int]  # Deployment name -> port
    pods: Any = None  # the kmock Pod resource
    runtime: str = "fake"  # or "real"
    live: dict[str, FakePod] = field(default_factory=dict)  # pod name -> pod, until its process has exited
    starts: list[str] = field(default_factory=list)
    slow_stop: dict[str, float] = field(default_factory=dict)
    _stopping: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _slices: dict[str, dict[str, Any]] = field(default_factory=dict)  # Deployment -> what was written
    _api: httpx.AsyncClient | None = None
    _task: asyncio.Task[None] | None = None

    # -- what tests look at -----------------------------------------------------------------------

    def pods_of(self, name: str) -> list[FakePod]:
        """The Deployment's pods that are not going away, oldest first."""
        return [p for p in self.live.values() if p.deployment == name and not p.terminating]

    @property
    def processes(self) -> dict[str, asyncio.subprocess.Process]:
        """Deployment -> the process of its first pod still alive (terminating or not)."""
        found: dict[str, asyncio.subprocess.Process] = {}
        for pod in self.live.values():
            found.setdefault(pod.deployment, pod.process)
        return found

    def pod_exists(self, name: str) -> bool:
        """A Pod object of the Deployment exists (terminating or not)."""
        return any(
            key[0] == self.pods and key[2].startswith(f"{name}-pod") and not self.cluster.objects[key].deleted
            for key in self.cluster.objects
        )

    # -- the pods' lives --------------------------------------------------------------------------

    def _spec(self, name: str) -> dict[str, Any] | None:
        key = (self.deployments, self.namespace, name)
        if key not in self.cluster.objects or self.cluster.objects[key].deleted:
            return None
        return self.cluster.objects[key].raw

    def _command(self, dep: dict[str, Any], address: str, port: int) -> list[str]:
        container = dep["spec"]["template"]["spec"]["containers"][0]
        args = list(container["args"])
        args[args.index("--host") + 1] = address
        args[args.index("--port") + 1] = str(port)
        json.loads(args[args.index("--model-json") + 1])  # what the operator put in the pod template must be valid
        if self.runtime == "real":
            return [sys.executable, *container["command"][1:], *args]  # python -m <the engine's module> ...
        return [sys.executable, str(FAKE_RUNTIME), *args]

    async def _start(self, name: str, dep: dict[str, Any]) -> None:
        taken = {p.address for p in self.live.values() if p.deployment == name}
        address = next(f"127.0.0.{i}" for i in range(1, 250) if f"127.0.0.{i}" not in taken)
        self.starts.append(name)
        pod_name = f"{name}-pod{self.starts.count(name)}"
        process = await self._spawn(dep, address, self.ports[name])
        self.live[pod_name] = FakePod(pod_name, name, address, self.ports[name], process)
        if self.pods is not None:
            labels = dep["spec"]["selector"]["matchLabels"]
            self.cluster.objects[self.pods, self.namespace, pod_name] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels},
                "status": {"phase": "Running", "podIP": address},
            }

    async def _spawn(self, dep: dict[str, Any], address: str, port: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self._command(dep, address, port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )

    async def _answers_ready(self, pod: FakePod) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{pod.url}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _report(self, name: str) -> None:
        pods = self.pods_of(name)
        replicas, ready = len(pods), sum(p.ready for p in pods)
        status = (self._spec(name) or {}).get("status") or {}
        if status.get("replicas") != replicas or status.get("readyReplicas") != ready:
            await self._write_status(name, {"replicas": replicas, "readyReplicas": ready})

    async def _write_status(self, name: str, status: dict[str, Any]) -> None:
        """As the Deployment controller does: through the API (the status subresource), so watches see it."""
        assert self._api is not None
        resp = await self._api.patch(DEPLOYMENT_PATH.format(ns=self.namespace, name=name) + "/status",
                                     json={"status": status}, headers={"Content-Type": "application/merge-patch+json"})
        resp.raise_for_status()

    async def _terminate(self, pod: FakePod) -> None:
        pod.terminating = True
        if self.pods is not None:
            self.cluster.objects[self.pods, self.namespace, pod.name].patch(
                {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        await self._publish_slice(pod.deployment)
        await asyncio.sleep(self.slow_stop.get(pod.deployment, 0))
        await _end(pod.process)
        del self.live[pod.name]
        if self.pods is not None:
            del self.cluster.objects[self.pods, self.namespace, pod.name]
        await self._publish_slice(pod.deployment)

    # -- the EndpointSlice controller -------------------------------------------------------------

    async def _publish_slice(self, name: str) -> None:
        endpoints = [
            {"addresses": [p.address], "targetRef": {"kind": "Pod", "name": p.name, "namespace": self.namespace},
             "conditions": {"ready": p.ready and not p.terminating, "serving": p.ready, "terminating": p.terminating}}
            for p in self.live.values() if p.deployment == name and p.in_slice
        ]  # fmt: skip
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-slice", "namespace": self.namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "http", "port": self.ports[name], "protocol": "TCP"}],
            "endpoints": endpoints,
        }  # fmt: skip
        if self._slices.get(name) == body or self._api is None:
            return
        path = SLICES_PATH.format(ns=self.namespace)
        if name in self._slices:
            resp = await self._api.patch(f"{path}/{name}-slice", json=body,
                                         headers={"Content-Type": "application/merge-patch+json"})
        else:
            resp = await self._api.post(path, json=body)
        resp.raise_for_status()
        self._slices[name] = body

    def take_out(self, pod_name: str) -> None:
        """Drop the pod from its slice; it keeps running (and counting for its Deployment)."""
        self.live[pod_name].in_slice = False

    # -- faults -----------------------------------------------------------------------------------

    async def crash(self, name: str) -> None:
        """The runtime dies and cannot come back: the Deployment reports a replica failure."""
        for pod in self.pods_of(name):
            pod.ready = False
            with contextlib.suppress(ProcessLookupError):
                pod.process.kill()
        first = self.pods_of(name)[0].name if self.pods_of(name) else name
        await self._write_status(name, {"conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "CrashLoopBackOff",
             "message": f"pod {first}: the runtime crashed (simulated)"}]})

    def freeze(self, name: str) -> None:
        """The runtime stops answering (SIGSTOP) while its pod still counts as ready."""
        self.pods_of(name)[0].process.send_signal(signal.SIGSTOP)

    async def restart(self, name: str) -> None:
        """What a failing liveness probe makes the kubelet do: kill the container and start it again."""
        pod = self.pods_of(name)[0]
        with contextlib.suppress(ProcessLookupError):
            pod.process.kill()
        await pod.process.wait()
        pod.ready = False
        await self._report(name)
        dep = self._spec(name)
        assert dep is not None
        self.starts.append(name)
        pod.process = await self._spawn(dep, pod.address, pod.port)

    # -- the loop ---------------------------------------------------------------------------------

    async def _step(self, name: str) -> None:
        dep = self._spec(name)
        if dep is None:
            return
        want = int(dep.get("spec", {}).get("replicas") or 0)
        while len(self.pods_of(name)) < want:
            await self._start(name, dep)
        for pod in self.pods_of(name)[want:][::-1]:
            # Each pod terminates on its own time: a slow one does not hold up the others.
            pod.terminating = True
            self._stopping[pod.name] = asyncio.create_task(self._terminate_and_report(pod))
        for pod in self.pods_of(name):
            if not pod.ready and pod.process.returncode is None and await self._answers_ready(pod):
                pod.ready = True
        await self._report(name)
        await self._publish_slice(name)

    async def _loop(self) -> None:
        while True:
            for name in self.ports:
                await self._step(name)
            await asyncio.sleep(0.1)

    async def _terminate_and_report(self, pod: FakePod) -> None:
        # As the Deployment controller does: a terminating pod no longer counts, though it still runs.
        await self._report(pod.deployment)
        try:
            await self._terminate(pod)
            if not self.pods_of(pod.deployment):
                await self._write_status(pod.deployment, {"conditions": []})
        finally:
            del self._stopping[pod.name]

    async def __aenter__(self) -> FakeKubelet:
        self._api = httpx.AsyncClient(base_url=str(self.cluster.url), timeout=10)
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
        for pod in list(self.live.values()):
            await _end(pod.process)
        self.live.clear()
        if self._api is not None:
            await self._api.aclose()


async def _end(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)  # a frozen one cannot act on SIGTERM
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
