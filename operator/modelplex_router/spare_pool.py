"""Spare runtimes of the local backend: started ahead, handed the next model that loads.

A spare is ``runtime_command --host H --spare``: it imports torch and transformers and rehearses a
load, prints ``modelplex-spare-ready`` and waits for its model on stdin (``modelplex_runtime.spare``).
``take`` hands a model to a waiting spare (a warm one first) as one JSON line; the pool is topped up
by ``refill``, which the backend calls once the handed-over model has loaded, so the refill does not
compete with that load for the CPU. A spare that exits on its own three times in a row (a runtime
command without ``--spare``, a broken environment) turns the pool off: models then start cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence

from modelplex_router.backend import BackendLoadError
from modelplex_router.cpus import pin_process
from modelplex_router.runtime_process import RuntimeProcess, spawn
from modelplex_spec import ModelEntry
from modelplex_spec.engines import TRANSFORMERS, Engine
from modelplex_spec.failure_reason import RuntimeOutput

log = logging.getLogger("modelplex_router.local")

# A spare that exits on its own this many times in a row turns the pool off (see the module docstring).
_SPARE_FAILURES_BEFORE_GIVING_UP = 3
# What a spare prints on stdout once warm (the protocol of modelplex_runtime.spare, which the router may
# not import).
_SPARE_READY_LINE = b"modelplex-spare-ready"


def track(
    process: asyncio.subprocess.Process,
    url: str,
    label: str,
    on_exit: Callable[[RuntimeProcess], None],
    engine: Engine = TRANSFORMERS,
) -> RuntimeProcess:
    """Wrap a started process: drain its output and call ``on_exit`` once it has ended."""
    rt = RuntimeProcess(
        process=process, url=url, started_at=time.monotonic(), label=label, engine=engine,
        output=RuntimeOutput(engine.output_reader()),
    )  # fmt: skip

    async def watch() -> None:
        await rt.pump_output()
        on_exit(rt)

    rt.pump = asyncio.create_task(watch(), name=f"output {label}")
    return rt


class SparePool:
    def __init__(
        self,
        command: list[str],
        host: str,
        env: dict[str, str] | None,
        target: int,
        on_handed_exit: Callable[[RuntimeProcess], None],
    ) -> None:
        self._command = command
        self._host = host
        self._env = env
        self._target = target
        self._on_handed_exit = on_handed_exit
        self._spares: list[RuntimeProcess] = []
        self._failures = 0
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def count(self) -> int:
        """Warm spares waiting now (for metrics)."""
        return sum(1 for rt in self._spares if rt.running and rt.warm)

    def refill(self) -> None:
        """Start spares in the background until the pool is full (no-op when it is, or is off)."""
        if self._closed or self._target <= 0 or (self._refill is not None and not self._refill.done()):
            return
        self._refill = asyncio.create_task(self._fill(), name="spare runtimes")

    async def take(
        self, api_id: str, entry: ModelEntry, port: int, cpus: Sequence[int] = ()
    ) -> RuntimeProcess | None:
        """Give the model to a waiting spare (first restricted to ``cpus`` when given: ``cpus.py``); None when
        there is none (or it died meanwhile)."""
        # A warm spare first; one still warming up is still ahead of a fresh process.
        self._spares.sort(key=lambda spare: not spare.warm)
        while self._spares:
            rt = self._spares.pop(0)
            if not rt.running:
                self._note_exit(rt)
                continue
            assert rt.process.stdin is not None
            model = entry.model_dump(mode="json", exclude_none=True)
            line = json.dumps({"model": model, "served_model_name": api_id, "port": port})
            try:
                if cpus:  # before it loads the model, which sizes its threads to the cores it may use
                    pin_process(rt.process.pid, cpus)
                rt.process.stdin.write(line.encode() + b"\n")
                await rt.process.stdin.drain()
                rt.process.stdin.close()
            except (BrokenPipeError, ConnectionResetError, ProcessLookupError):
                await rt.terminate(0)
                self._note_exit(rt)
                continue
            self._failures = 0
            rt.label, rt.url, rt.started_at = api_id, f"http://{self._host}:{port}", time.monotonic()
            log.info(
                "handing %s to spare runtime %d on port %d",
                api_id, rt.process.pid, port,
                extra={"model": api_id, "port": port, "pid": rt.process.pid},
            )  # fmt: skip
            return rt
        return None

    async def _fill(self) -> None:
        while not self._closed and len(self._spares) < self._target:
            if self._failures >= _SPARE_FAILURES_BEFORE_GIVING_UP:
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
                self._failures = _SPARE_FAILURES_BEFORE_GIVING_UP
                return
            rt = track(process, "", "spare", self._exited)
            rt.stdout_pump = asyncio.create_task(self._watch_stdout(rt), name="stdout spare")
            self._spares.append(rt)
            log.info("started spare runtime %d", process.pid, extra={"pid": process.pid})

    def _exited(self, rt: RuntimeProcess) -> None:
        # A spare that ends while still waiting in the pool failed (nothing stops a waiting spare but
        # close); one handed a model is the backend's.
        if rt in self._spares:
            self._spares.remove(rt)
            self._note_exit(rt)
            self.refill()
        elif rt.label != "spare":
            self._on_handed_exit(rt)

    def _note_exit(self, rt: RuntimeProcess) -> None:
        """A spare that ended before it was used: count it, and give up on spares after a few."""
        self._failures += 1
        reason = rt.exit_reason()
        if self._failures >= _SPARE_FAILURES_BEFORE_GIVING_UP:
            log.warning(
                "spare runtimes turned off after %d failed starts; models start cold: %s", self._failures, reason
            )
        else:
            log.warning("a spare runtime ended before it was used: %s", reason)

    async def _watch_stdout(self, rt: RuntimeProcess) -> None:
        """Mark the spare warm when it says so; keep draining stdout after (a full pipe would block it)."""
        assert rt.process.stdout is not None
        while line := await rt.process.stdout.readline():
            if line.strip() == _SPARE_READY_LINE:
                rt.warm = True
                log.info("spare runtime %d is warm", rt.process.pid, extra={"pid": rt.process.pid})

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refill
        spares, self._spares = self._spares, []
        await asyncio.gather(*(rt.terminate(2.0) for rt in spares), return_exceptions=True)
