"""The model's load state: loading -> ready, or loading -> failed."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from modelplex_runtime.engine_api import Engine


class Phase(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ModelState:
    phase: Phase = Phase.LOADING
    engine: Engine | None = None
    error: str | None = None
    load_seconds: float | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_ready(self, engine: Engine, seconds: float) -> None:
        with self._lock:
            self.engine, self.load_seconds, self.phase = engine, seconds, Phase.READY

    def set_failed(self, error: str) -> None:
        with self._lock:
            self.error, self.phase = error, Phase.FAILED
