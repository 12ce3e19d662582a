"""Run the operator: ``python -m modelplex_operator`` (settings from MODELPLEX_OPERATOR_* variables)."""

from __future__ import annotations

import asyncio

import kopf

from modelplex_operator.handlers import register
from modelplex_operator.logs import configure_logging
from modelplex_operator.settings import OperatorSettings


async def run_operator(settings: OperatorSettings, stop_flag: asyncio.Event | None = None,
                       ready_flag: asyncio.Event | None = None, liveness: bool = True) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    namespaces = settings.namespace_list()
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        memo=kopf.Memo(),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if liveness else None,
    )


def main() -> int:
    settings = OperatorSettings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(run_operator(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
