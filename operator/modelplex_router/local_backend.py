"""The local backend: each model's runtime is an OS process on this machine (the embedded default).

Each model runs on its entry's engine (``modelplex_spec.engines``): the modelplex runtime
(``runtime_command``) or vLLM's OpenAI server (``engine_commands["vllm"]``, started from the interpreter of
the vLLM virtualenv). What differs per engine (its command line, readiness path, where it logs and how to
read why it failed) comes from the engine; this module only runs processes.

One process's mechanics (its process group, output, stopping its whole tree) are in ``runtime_process``.

Spare runtimes (``spares`` > 0) take the cold start's fixed costs off the request path: a spare is a
runtime started with ``--spare`` ahead of time, which imports torch and transformers and rehearses a
load, then waits for its model on stdin (``modelplex_runtime.spare``). ``ensure_started`` hands the
model to a waiting spare when there is one and starts a fresh process otherwise; the pool is topped up
once the handed-over model has loaded, so the refill does not compete with that load for the CPU. Only
the transformers engine takes spares, and only for entries without ``engine_args`` (a spare's flags are
fixed when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Mapping

import httpx

from modelplex_router.backend import BackendLoadError, BackendObservation
from modelplex_router.runtime_process import RuntimeProcess, free_port, spawn
from modelplex_spec import ModelEntry
from modelplex_spec.engines import TRANSFORMERS, VLLM, Engine, engine_for
from modelplex_spec.failure_reason import RuntimeOutput

log = logging.getLogger("modelplex_router.local")

# A spare that exits on its own this many times in a row (a runtime command without --spare, a broken
# environment) turns the pool off: cold starts still work, and the log says why.
_SPARE_FAILURES_BEFORE_GIVING_UP = 3
# What a spare prints on stdout once warm (the protocol of modelplex_runtime.spare, which the router may
# not import).
_SPARE_READY_LINE = b"modelplex-spare-ready"


class LocalProcessBackend:
    """Runs one server per model: ``runtime_command --host H --port P --model-json J --served-model-name ID``
    for the transformers engine, ``<engine_commands[name]> <the engine's arguments>`` for the others
    (default for vLLM: this interpreter with ``-m vllm.entrypoints.openai.api_server``).

    With ``spares`` > 0 it also keeps that many ``runtime_command --host H --spare`` processes waiting
    (see the module docstring); ``start`` fills the pool, ``close`` empties it.
    """

    def __init__(
        self,
        runtime_command: list[str],
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        spares: int = 0,
        engine_commands: Mapping[str, list[str]] | None = None,
    ) -> None:
        self._command = list(runtime_command)
        self._engine_commands: dict[str, list[str]] = {
            TRANSFORMERS.name: self._command,
            VLLM.name: [sys.executable, "-m", VLLM.module],
            **{name: list(command) for name, command in (engine_commands or {}).items()},
        }
        self._host = host
        self._env = env
        self._runtimes: dict[str, RuntimeProcess] = {}
        self._failures: dict[str, str] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0), trust_env=False)
        self._spare_target = spares
        self._spares: list[RuntimeProcess] = []
        self._spare_failures = 0
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    def engine_command(self, engine: str) -> list[str]:
        """The command an engine's servers start with (the engine's arguments follow)."""
        return self._engine_commands[engine]

    async def start(self) -> None:
        """Start the spare runtimes (returns at once; they warm up in the background)."""
        self._schedule_refill()

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        rt = self._runtimes.get(api_id)
        if rt is not None and rt.running and not rt.stopping:
            return
        if rt is not None:
            await self._reap(api_id, rt, grace=0)
        engine = engine_for(entry)
        port = free_port(self._host)
        rt = None
        if engine.takes_spares and not entry.engine_args:
            rt = await self._hand_to_spare(api_id, entry, port)
        if rt is None:
            launch = engine.launch(entry, host=self._host, port=port, served_model_name=api_id)
            command = self.engine_command(engine.name)
            process = await spawn(
                [*command, *launch.args],
                stdin=asyncio.subprocess.DEVNULL,
                # An engine that logs on stdout gets one pipe for both, so its lines keep their order.
                stdout=asyncio.subprocess.PIPE if engine.output_on_stdout else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT if engine.output_on_stdout else asyncio.subprocess.PIPE,
                base_env=self._env,
                env=launch.env,
                what=engine.title,
            )
            rt = self._track(process, f"http://{self._host}:{port}", api_id, engine)
            log.info(
                "started runtime for %s on port %d (pid %d, engine %s)",
                api_id, port, process.pid, engine.name,
                extra={"model": api_id, "port": port, "pid": process.pid, "engine": engine.name},
            )  # fmt: skip
        self._runtimes[api_id] = rt
        self._failures.pop(api_id, None)

    def _track(
        self, process: asyncio.subprocess.Process, url: str, label: str, engine: Engine = TRANSFORMERS
    ) -> RuntimeProcess:
        rt = RuntimeProcess(
            process=process, url=url, started_at=time.monotonic(), label=label, engine=engine,
            output=RuntimeOutput(engine.output_reader()),
        )  # fmt: skip
        rt.pump = asyncio.create_task(self._watch_output(rt), name=f"output {label}")
        return rt

    async def _hand_to_spare(self, api_id: str, entry: ModelEntry, port: int) -> RuntimeProcess | None:
        """Give the model to a waiting spare; None when there is none (or it died meanwhile)."""
        # A warm spare first; one still warming up is still ahead of a fresh process.
        self._spares.sort(key=lambda spare: not spare.warm)
        while self._spares:
            rt = self._spares.pop(0)
            if not rt.running:
                self._note_spare_exit(rt)
                continue
            assert rt.process.stdin is not None
            model = entry.model_dump(mode="json", exclude_none=True)
            line = json.dumps({"model": model, "served_model_name": api_id, "port": port})
            try:
                rt.process.stdin.write(line.encode() + b"\n")
                await rt.process.stdin.drain()
                rt.process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                await self._reap(rt.label, rt, grace=0)
                self._note_spare_exit(rt)
                continue
            self._spare_failures = 0
            rt.label, rt.url, rt.started_at = api_id, f"http://{self._host}:{port}", time.monotonic()
            log.info(
                "handing %s to spare runtime %d on port %d",
                api_id, rt.process.pid, port,
                extra={"model": api_id, "port": port, "pid": rt.process.pid},
            )  # fmt: skip
            return rt
        return None

    def _schedule_refill(self) -> None:
        if self._closed or self._spare_target <= 0 or (self._refill is not None and not self._refill.done()):
            return
        self._refill = asyncio.create_task(self._fill_spares(), name="spare runtimes")

    async def _fill_spares(self) -> None:
        while not self._closed and len(self._spares) < self._spare_target:
            if self._spare_failures >= _SPARE_FAILURES_BEFORE_GIVING_UP:
                return
            try:
                process = await spawn(
                    [*self._command, "--host", self._host, "--spare"],
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    base_env=self._env,
                )
            except BackendLoadError as exc:
                log.warning("cannot start a spare runtime: %s", exc)
                self._spare_failures = _SPARE_FAILURES_BEFORE_GIVING_UP
                return
            rt = self._track(process, "", "spare")
            rt.stdout_pump = asyncio.create_task(self._watch_stdout(rt), name="stdout spare")
            self._spares.append(rt)
            log.info("started spare runtime %d", process.pid, extra={"pid": process.pid})

    def _note_spare_exit(self, rt: RuntimeProcess) -> None:
        """A spare that ended before it was used: count it, and give up on spares after a few."""
        self._spare_failures += 1
        reason = rt.exit_reason()
        if self._spare_failures >= _SPARE_FAILURES_BEFORE_GIVING_UP:
            log.warning(
                "spare runtimes turned off after %d failed starts; models start cold: %s",
                self._spare_failures,
                reason,
            )
        else:
            log.warning("a spare runtime ended before it was used: %s", reason)

    @property
    def spare_count(self) -> int:
        """Warm spare runtimes waiting now (for metrics)."""
        return sum(1 for rt in self._spares if rt.running and rt.warm)

    async def _watch_stdout(self, rt: RuntimeProcess) -> None:
        """Mark the spare warm when it says so; keep draining stdout after (a full pipe would block it)."""
        assert rt.process.stdout is not None
        while line := await rt.process.stdout.readline():
            if line.strip() == _SPARE_READY_LINE:
                rt.warm = True
                log.info("spare runtime %d is warm", rt.process.pid, extra={"pid": rt.process.pid})

    async def _watch_output(self, rt: RuntimeProcess) -> None:
        await rt.pump_output()
        # A spare that ends while still waiting in the pool failed (nothing stops a waiting spare but close).
        if rt in self._spares:
            self._spares.remove(rt)
            self._note_spare_exit(rt)
            self._schedule_refill()

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> str:
        rt = self._runtimes.get(api_id)
        if rt is None:
            raise BackendLoadError("the runtime was not started")
        try:
            return await self._poll_ready(api_id, rt, timeout_seconds)
        finally:
            self._schedule_refill()

    async def _poll_ready(self, api_id: str, rt: RuntimeProcess, timeout_seconds: float) -> str:
        deadline = time.monotonic() + timeout_seconds
        delay = 0.05
        while True:
            if not rt.running:
                # Let the output pump read the runtime's last words before reporting them.
                if rt.pump is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(rt.pump), 2.0)
                reason = rt.exit_reason()
                self._failures[api_id] = reason
                raise BackendLoadError(reason)
            try:
                resp = await self._http.get(f"{rt.url}{rt.engine.ready_path}")
                if resp.status_code == 200:
                    rt.ready = True
                    return rt.url
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise BackendLoadError(f"{rt.engine.title} was not ready within {timeout_seconds:g}s")
            rt.activity.clear()
            exited = asyncio.ensure_future(rt.process.wait())
            spoke = asyncio.ensure_future(rt.activity.wait())
            await asyncio.wait({exited, spoke}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            exited.cancel()
            spoke.cancel()
            delay = min(delay * 1.5, 0.5)

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        rt = self._runtimes.get(api_id)
        if rt is None:
            return
        await self._reap(api_id, rt, grace_seconds)

    async def end_unresponsive(self, api_id: str) -> None:
        """SIGKILL at once: a frozen (SIGSTOPped, stuck) runtime would not act on SIGTERM."""
        rt = self._runtimes.get(api_id)
        if rt is not None:
            await self._reap(api_id, rt, grace=0)

    async def _reap(self, api_id: str, rt: RuntimeProcess, grace: float) -> None:
        await rt.terminate(grace)
        if self._runtimes.get(api_id) is rt:
            del self._runtimes[api_id]

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
            running=True, ready=rt.ready, url=rt.url, memory_bytes=rt.memory_bytes()
        )

    def pid(self, api_id: str) -> int | None:
        """The runtime's process id (for logs and tests)."""
        rt = self._runtimes.get(api_id)
        return rt.process.pid if rt is not None and rt.running else None

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refill
        spares, self._spares = self._spares, []
        await asyncio.gather(
            *(self._reap(api_id, rt, grace=5.0) for api_id, rt in list(self._runtimes.items())),
            *(self._reap(rt.label, rt, grace=2.0) for rt in spares),
            return_exceptions=True,
        )
        await self._http.aclose()
