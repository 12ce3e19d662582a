"""GET /health, /ready, /metrics and /v1/models: the model's state for supervisors and clients.

/health is the pod's liveness probe: 200 while the process serves and its engine thread is alive and
making progress; 503 when the engine thread died or is wedged (busy with no progress for
``--engine-stall-seconds``), so the pod is restarted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.errors import APIError, not_ready
from modelplex_runtime.lifecycle import Phase


def router(ctx: RuntimeContext) -> APIRouter:
    api = APIRouter()
    state = ctx.state

    @api.get("/health")
    async def health() -> JSONResponse:
        problem = state.engine.health() if state.engine is not None else None
        if problem is not None:
            err = APIError(503, f"model {ctx.served!r} is unhealthy: {problem}", type="service_unavailable",
                           code="engine_unhealthy")
            return JSONResponse({**err.body(), "status": "unhealthy", "phase": state.phase.value}, status_code=503)
        return JSONResponse({"status": "ok", "phase": state.phase.value})

    @api.get("/ready")
    async def ready() -> JSONResponse:
        if state.phase is Phase.READY and state.engine is not None:
            info = state.engine.info
            return JSONResponse({"status": "ready", "model": ctx.served, "kind": ctx.kind, "device": info.device,
                                 "dtype": info.dtype, "max_model_len": info.max_model_len,
                                 "load_seconds": state.load_seconds, "quantization": info.quantization,
                                 "tool_call_parser": info.tool_call_parser,
                                 **{k: v for k, v in info.extra.items() if k in ("param_bytes", "pooling", "embedding_size")}})
        if state.phase is Phase.FAILED:
            err = not_ready(f"model {ctx.served!r} failed to load: {state.error}")
        else:
            err = not_ready(f"model {ctx.served!r} is still loading")
        return JSONResponse(err.body(), status_code=503)

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        card: dict[str, Any] = {"id": ctx.served, "object": "model", "created": ctx.created, "owned_by": "modelplex",
                                "kind": ctx.kind}
        card["max_model_len"] = state.engine.info.max_model_len if state.engine is not None else ctx.entry.max_seq_len
        card["ready"] = state.phase is Phase.READY
        return {"object": "list", "data": [card]}

    return api
