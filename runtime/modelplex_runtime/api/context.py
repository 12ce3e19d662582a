"""What every endpoint family shares: the settings, the model's state, metrics, admission and the pump."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from modelplex_runtime import protocol
from modelplex_runtime.admission import AdmissionGate
from modelplex_runtime.engine_api import Engine
from modelplex_runtime.errors import bad_request, not_ready
from modelplex_runtime.lifecycle import ModelState, Phase
from modelplex_runtime.metrics import RuntimeMetrics
from modelplex_runtime.pump import EventPump
from modelplex_runtime.settings import RuntimeSettings
from modelplex_spec import ModelEntry

TEXT_KINDS = ("Plain", "GGUF", "VisionPlain")


@dataclass
class RuntimeContext:
    settings: RuntimeSettings
    entry: ModelEntry
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    state: ModelState = field(default_factory=ModelState)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.served = self.settings.served_name(self.entry)
        self.kind = self.entry.kind.value
        self.gate = AdmissionGate(self.settings.max_waiting_requests + self.settings.max_batch_size)
        self._pumps: dict[asyncio.AbstractEventLoop, EventPump] = {}

    def pump(self) -> EventPump:
        loop = asyncio.get_running_loop()
        if loop not in self._pumps:
            self._pumps.clear()  # one loop per server; a new one (tests) replaces the old
            self._pumps[loop] = EventPump(loop, self.settings.stream_interval_ms / 1000)
        return self._pumps[loop]

    def engine_for(self, requested: str | None, wanted_kinds: tuple[str, ...], what: str) -> Engine:
        protocol.resolve_model_name(requested, self.served, self.entry.pipeline_name)
        if self.kind not in wanted_kinds:
            raise bad_request(
                f"model {self.served!r} is a {self.kind} model and does not serve {what}; "
                f"{what} needs a {' or '.join(wanted_kinds)} model",
                param="model",
                code="wrong_model_kind",
            )
        if self.state.phase is Phase.FAILED:
            raise not_ready(f"model {self.served!r} failed to load: {self.state.error}")
        if self.state.engine is None:
            raise not_ready(f"model {self.served!r} is still loading")
        return self.state.engine
