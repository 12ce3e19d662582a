"""The transformers engine: the modelplex runtime (``python -m modelplex_runtime``, torch + transformers).

It reads the whole entry itself (``--model-json``), so it honours every field; ``engine_args`` are
appended as runtime flags (``--max-batch-size 8``, ``--cpu-threads 2``, ...; docs/runtime.md lists them).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from modelplex_spec.engines.base import Engine, Flag

if TYPE_CHECKING:
    from modelplex_spec.entry import ModelEntry


def runtime_entry_json(entry: ModelEntry) -> str:
    """The entry as the runtime reads it: config-file form without the settings that are not the
    runtime's business (``kubernetes``, ``scaling``: a change there must not roll the model's pods) or that
    reach it as flags (``engine_args``)."""
    data = entry.to_config_dict()
    data.pop("kubernetes", None)
    data.pop("scaling", None)
    data.pop("engine_args", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class TransformersEngine(Engine):
    name = "transformers"
    title = "the runtime"
    module = "modelplex_runtime"
    ready_path = "/ready"
    takes_spares = True
    # Set by the router and operator, or (``--spare``) only by the local backend's spare pool.
    reserved_flags = ("--model-file", "--spare")

    def flags(self, entry: ModelEntry, *, host: str, port: int, served_model_name: str, gpus: int = 0) -> list[Flag]:
        return [
            Flag("modelplex", ("--host", host)),
            Flag("modelplex", ("--port", str(port))),
            Flag("modelplex", ("--model-json", runtime_entry_json(entry))),
            Flag("modelplex", ("--served-model-name", served_model_name)),
        ]
