"""The engines a model can run on, and the one pure mapping per engine from an entry to its server.

``engine_for(entry)`` is the engine named by the entry's ``engine`` field. The router's local backend and
the operator both start servers from ``engine.launch(entry, ...)``, so an entry means the same in both
places; ``ModelEntry`` validation refuses what the chosen engine cannot honour (``engine.problems``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelplex_spec.engines.base import Engine, EngineLaunch, Flag, OutputReader
from modelplex_spec.engines.transformers import TransformersEngine, runtime_entry_json
from modelplex_spec.engines.vllm import VllmEngine, VllmFailureReader, vllm_failure_reason

if TYPE_CHECKING:
    from modelplex_spec.entry import ModelEntry

TRANSFORMERS = TransformersEngine()
VLLM = VllmEngine()
ENGINES: dict[str, Engine] = {engine.name: engine for engine in (TRANSFORMERS, VLLM)}


def engine_for(entry: ModelEntry) -> Engine:
    return ENGINES[entry.engine]


__all__ = [
    "ENGINES",
    "TRANSFORMERS",
    "VLLM",
    "Engine",
    "EngineLaunch",
    "Flag",
    "OutputReader",
    "VllmFailureReader",
    "engine_for",
    "runtime_entry_json",
    "vllm_failure_reason",
]
