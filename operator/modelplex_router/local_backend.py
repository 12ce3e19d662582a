"""The local backend: each replica of a model is an OS process on this machine (the embedded default).

Each model runs on its entry's engine (``modelplex_spec.engines``): the modelplex runtime
(``runtime_command``) or vLLM's OpenAI server (``engine_commands["vllm"]``, started from the interpreter of
the vLLM virtualenv). What differs per engine (its command line, readiness path, where it logs and how to
read why it failed) comes from the engine; this module only runs processes.

A model has as many processes as its replica count asks for (``scale``; one at first, more when the
autoscaler asks), each on its own port, published in a ``ReplicaBoard`` the router reads. A replica
takes requests once its readiness path answers 200. With GPUs on the machine and ``maxReplicas`` > 1,
replica slot ``i`` sees its own GPU(s) through ``CUDA_VISIBLE_DEVICES`` (``gpus.py``). This backend
plays the kubelet's part for its processes: a replica that dies while others of the model run is
replaced after a back-off (2 s, doubling to 300 s; reset once a replica becomes ready); when the last
one dies the model has failed and the router says so.

One process's mechanics (its process group, output, stopping its whole tree) are in ``runtime_process``;
spare runtimes (started ahead, handed the next replica to start) in ``spare_pool``. Only the
transformers engine takes spares, and only for entries without ``engine_args`` and replicas without a
GPU assignment (a spare's flags and environment are fixed when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelplex_router.backend import BackendLoadError, BackendObservation, Replica, Replicas
from modelplex_router.backoff import BackoffPolicy, LoadBackoff
from modelplex_router.cpus import pin_process, replica_cpus
from modelplex_router.gpus import devices_per_replica, replica_devices
from modelplex_router.replica_board import ReplicaBoard
from modelplex_router.runtime_process import RuntimeProcess, free_port, spawn
from modelplex_router.spare_pool import SparePool, track
from modelplex_spec import ModelEntry
from modelplex_spec.engines import TRANSFORMERS, VLLM, engine_for

log = logging.getLogger("modelplex_router.local")

# Replacing replicas that died while others of the model run (as the kubelet's CrashLoopBackOff).
_RESTART_BACKOFF = BackoffPolicy(initial=2.0, maximum=300.0)


@dataclass
class _Model:
    entry: ModelEntry
    desired: int = 0
    replicas: dict[str, RuntimeProcess] = field(default_factory=dict)
    started: int = 0
    """Replicas started so far (for their ids: ``<api id>/<n>``)."""
    failure: str | None = None
    """Why the last replica that ended on its own ended."""
    restarts: LoadBackoff = field(default_factory=lambda: LoadBackoff(_RESTART_BACKOFF))
    replacing: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def live(self) -> list[RuntimeProcess]:
        return [rt for rt in self.replicas.values() if rt.running and not rt.retired]


class LocalProcessBackend:
    """Runs each replica as ``runtime_command --host H --port P --model-json J --served-model-name ID`` for
    the transformers engine, ``<engine_commands[name]> <the engine's arguments>`` for the others (default
    for vLLM: this interpreter with ``-m vllm.entrypoints.openai.api_server``).

    With ``spares`` > 0 it also keeps that many ``runtime_command --host H --spare`` processes waiting
    (``spare_pool``); ``start`` fills the pool, ``close`` empties it.
    """

    def __init__(
        self,
        runtime_command: list[str],
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        spares: int = 0,
        engine_commands: Mapping[str, list[str]] | None = None,
        gpus: Sequence[str] = (),
        cpus: Sequence[int] = (),
        ready_timeout: float = 1800.0,
    ) -> None:
        self._command = list(runtime_command)
        self._engine_commands: dict[str, list[str]] = {
            TRANSFORMERS.name: self._command,
            VLLM.name: [sys.executable, "-m", VLLM.module],
            **{name: list(command) for name, command in (engine_commands or {}).items()},
        }
        self._host = host
        self._env = env
        self._gpus = list(gpus)
        self._cpus = list(cpus)
        self._ready_timeout = ready_timeout
        self._models: dict[str, _Model] = {}
        self._board = ReplicaBoard()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)
        self._spares = SparePool(self._command, host, env, spares, self._exited)
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def engine_command(self, engine: str) -> list[str]:
        """The command an engine's servers start with (the engine's arguments follow)."""
        return self._engine_commands[engine]

    async def start(self) -> None:
        """Start the spare runtimes (returns at once; they warm up in the background)."""
        self._spares.refill()

    @property
    def spare_count(self) -> int:
        """Warm spare runtimes waiting now (for metrics)."""
        return self._spares.count

    # -- replicas ---------------------------------------------------------------------------------

    def replicas(self, api_id: str) -> Replicas:
        return self._board.get(api_id)

    async def replicas_changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        return await self._board.changed(api_id, version, timeout_seconds)

    def _publish(self, api_id: str, model: _Model) -> None:
        members = [
            Replica(rt.replica_id, rt.url, rt.ready and rt.running and not rt.retired)
            for rt in model.replicas.values()
        ]
        self._board.publish(api_id, desired=model.desired, members=members)

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        model = self._models.setdefault(api_id, _Model(entry))
        model.entry = entry
        floor = entry.effective_scaling.floor
        async with model.lock:
            if model.desired >= floor and len(model.live()) >= floor:
                return
            model.failure = None
            await self._converge(api_id, model, max(model.desired, floor))

    async def scale(self, api_id: str, replicas: int, *, reason: str, remove: Sequence[str] = ()) -> None:
        model = self._models.get(api_id)
        if model is None:
            raise BackendLoadError(f"model {api_id!r} is not running here")
        async with model.lock:
            log.info(
                "scaling %s to %d replicas: %s", api_id, replicas, reason,
                extra={"model": api_id, "replicas": replicas, "reason": reason},
            )  # fmt: skip
            await self._converge(api_id, model, max(1, replicas), remove)

    async def _converge(self, api_id: str, model: _Model, desired: int, remove: Sequence[str] = ()) -> None:
        """Start or retire processes until ``desired`` live ones are asked for (under ``model.lock``)."""
        model.desired = desired
        live = model.live()
        extra = len(live) - desired
        if extra > 0:
            # The router's choice first (it drained them), then ones still starting, then the newest.
            order = sorted(live, key=lambda rt: (rt.replica_id not in remove, rt.ready, -rt.started_at))
            for rt in order[:extra]:
                rt.retired = True
                self._spawn(rt.terminate(5.0), f"retire {rt.replica_id}")
        for _ in range(desired - len(live)):
            await self._start_replica(api_id, model)
        self._publish(api_id, model)

    async def _start_replica(self, api_id: str, model: _Model) -> None:
        entry = model.entry
        engine = engine_for(entry)
        port = free_port(self._host)
        used = {rt.slot for rt in model.live()}
        slot = next(i for i in range(len(used) + 1) if i not in used)
        env: dict[str, str] = {}
        replicas = entry.effective_scaling.max_replicas
        if self._gpus and replicas > 1:
            env["CUDA_VISIBLE_DEVICES"] = replica_devices(slot, self._gpus, devices_per_replica(entry))
        cpus = replica_cpus(slot, self._cpus, replicas) if self._cpus and replicas > 1 else []
        rt = None
        if engine.takes_spares and not entry.engine_args and not env:
            rt = await self._spares.take(api_id, entry, port, cpus)
        if rt is None:
            launch = engine.launch(entry, host=self._host, port=port, served_model_name=api_id)
            process = await spawn(
                [*self.engine_command(engine.name), *launch.args],
                stdin=asyncio.subprocess.DEVNULL,
                # An engine that logs on stdout gets one pipe for both, so its lines keep their order.
                stdout=asyncio.subprocess.PIPE if engine.output_on_stdout else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT if engine.output_on_stdout else asyncio.subprocess.PIPE,
                base_env=self._env,
                env={**launch.env, **env},
                what=engine.title,
            )
            if cpus:
                # Gone already: its exit is reported like any other, with what it wrote.
                with contextlib.suppress(ProcessLookupError):
                    pin_process(process.pid, cpus)
            rt = track(process, f"http://{self._host}:{port}", api_id, self._exited, engine)
            log.info(
                "started runtime for %s on port %d (pid %d, engine %s)",
                api_id, port, process.pid, engine.name,
                extra={"model": api_id, "port": port, "pid": process.pid, "engine": engine.name,
                       "slot": slot, **({"cpus": cpus} if cpus else {}), **env},
            )  # fmt: skip
        rt.replica_id = f"{api_id}/{model.started}"
        rt.slot = slot
        model.started += 1
        model.replicas[rt.replica_id] = rt
        rt.ready_task = asyncio.create_task(self._become_ready(api_id, model, rt), name=f"ready {rt.replica_id}")

    async def _become_ready(self, api_id: str, model: _Model, rt: RuntimeProcess) -> None:
        """Poll the replica's readiness path (woken by its output) until 200, its exit, or the timeout."""
        deadline = time.monotonic() + self._ready_timeout
        delay = 0.05
        while rt.running and not rt.retired:
            try:
                resp = await self._http.get(f"{rt.url}{rt.engine.ready_path}")
                if resp.status_code == 200:
                    rt.ready = True
                    model.restarts.succeeded()
                    self._publish(api_id, model)
                    self._spares.refill()
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                rt.exit_note = f"{rt.engine.title} was not ready within {self._ready_timeout:g}s"
                await rt.terminate(0)
                return
            rt.activity.clear()
            exited = asyncio.ensure_future(rt.process.wait())
            spoke = asyncio.ensure_future(rt.activity.wait())
            await asyncio.wait({exited, spoke}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            spoke.cancel()
            delay = min(delay * 1.5, 0.5)

    def _exited(self, rt: RuntimeProcess) -> None:
        """A replica's process has ended (its output fully read): out of the set; replaced when it died
        on its own while others of the model run."""
        model = self._models.get(rt.label)
        if model is None or model.replicas.get(rt.replica_id) is not rt:
            return
        del model.replicas[rt.replica_id]
        if not rt.retired:
            model.failure = rt.exit_reason()
            if model.live() and not self._closed:
                delay = model.restarts.failed(time.monotonic())
                log.error(
                    "model %s: replica %s ended: %s; replacing it in %.0fs",
                    rt.label, rt.replica_id, model.failure, delay,
                    extra={"model": rt.label, "replica": rt.replica_id},
                )  # fmt: skip
                self._replace_later(rt.label, model, delay)
        self._publish(rt.label, model)
        self._spares.refill()

    def _replace_later(self, api_id: str, model: _Model, delay: float) -> None:
        if model.replacing is not None and not model.replacing.done():
            return

        async def replace() -> None:
            await asyncio.sleep(delay)
            async with model.lock:
                live = model.live()
                if live and len(live) < model.desired and self._models.get(api_id) is model:
                    await self._converge(api_id, model, model.desired)

        model.replacing = asyncio.create_task(replace(), name=f"replace {api_id}")

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> Replicas:
        deadline = time.monotonic() + timeout_seconds
        while True:
            replicas = self._board.get(api_id)
            if replicas.ready:
                return replicas
            model = self._models.get(api_id)
            if model is None or not model.replicas:
                raise BackendLoadError(model.failure if model and model.failure else "the runtime was not started")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                title = engine_for(model.entry).title
                raise BackendLoadError(f"{title} was not ready within {timeout_seconds:g}s")
            await self._board.changed(api_id, replicas.version, remaining)

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        model = self._models.get(api_id)
        if model is None:
            return
        async with model.lock:
            if model.replacing is not None:
                model.replacing.cancel()
            model.desired = 0
            model.failure = None
            processes = list(model.replicas.values())
            for rt in processes:
                rt.retired = True
            self._publish(api_id, model)
            await asyncio.gather(*(rt.terminate(grace_seconds) for rt in processes), return_exceptions=True)
            for rt in processes:
                if model.replicas.get(rt.replica_id) is rt:
                    del model.replicas[rt.replica_id]
            self._publish(api_id, model)

    async def end_unresponsive(self, api_id: str, replica_id: str) -> None:
        """SIGKILL at once (a frozen runtime would not act on SIGTERM); replaced if others of the model run."""
        model = self._models.get(api_id)
        rt = model.replicas.get(replica_id) if model is not None else None
        if rt is not None:
            rt.exit_note = "declared hung by the router (its health checks failed)"
            await rt.terminate(0)

    async def observe(self, api_id: str) -> BackendObservation:
        model = self._models.get(api_id)
        if model is None:
            return BackendObservation(running=False, ready=False)
        live = model.live()
        if live:
            sizes = [size for rt in live if (size := rt.memory_bytes()) is not None]
            return BackendObservation(
                running=True, ready=any(rt.ready for rt in live), memory_bytes=sum(sizes) if sizes else None
            )
        # A process that died and whose output is still being read counts as failed already.
        dead = [rt for rt in model.replicas.values() if not rt.running and not rt.retired]
        failure = model.failure or (dead[0].exit_reason() if dead else None)
        return BackendObservation(running=False, ready=False, failed=failure is not None, message=failure)

    def pids(self, api_id: str) -> list[int]:
        """The model's running replica processes (for logs and tests)."""
        model = self._models.get(api_id)
        return [rt.process.pid for rt in model.live()] if model is not None else []

    def pid(self, api_id: str) -> int | None:
        """The process of the model's first running replica (for logs and tests)."""
        pids = self.pids(api_id)
        return pids[0] if pids else None

    async def close(self) -> None:
        self._closed = True
        await self._spares.close()
        for model in self._models.values():
            if model.replacing is not None:
                model.replacing.cancel()
        await asyncio.gather(
            *(rt.terminate(5.0) for model in self._models.values() for rt in list(model.replicas.values())),
            *self._background,
            return_exceptions=True,
        )
        await self._http.aclose()
