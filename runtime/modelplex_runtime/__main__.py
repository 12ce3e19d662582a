"""``python -m modelplex_runtime`` / ``modelplex-runtime``: serve one model over HTTP.

The server listens before the weights load (so /health answers at once); a failed load logs the
reason, prints one line to stderr and exits non-zero. SIGTERM drains in-flight requests and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from modelplex_runtime.settings import RuntimeSettings


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="modelplex-runtime", description="Serve one model over an OpenAI-compatible API."
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model-json", help="One model entry as JSON (config-file format).")
    p.add_argument("--model-file", help="A JSON file holding one model entry.")
    p.add_argument(
        "--served-model-name", help="Model id served (default: the entry's alias or pipeline name)."
    )
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N.")
    p.add_argument("--max-batch-size", type=int, help="Most sequences decoded together (default 32).")
    p.add_argument(
        "--cpu-threads",
        type=int,
        help="Torch threads on CPU (default: measured per step size, all cores or all but one).",
    )
    p.add_argument(
        "--kv-cache-gib",
        type=float,
        help="Most memory the batch's KV cache may take (default: 1/4 of RAM up to 8 GiB; CUDA: half the free memory).",
    )
    p.add_argument(
        "--max-step-tokens",
        type=int,
        help="Most tokens in one batch step: decode tokens plus prompt chunks (default 512).",
    )
    p.add_argument("--batch-path", choices=["auto", "padded"], help="auto (default): packed when the model allows.")
    p.add_argument("--cpu-linear", choices=["onednn", "torch"],
                   help="onednn (default): f32 linears on CPU also use a oneDNN weight for multi-token steps.")
    p.add_argument(
        "--stream-interval-ms",
        type=float,
        help="Send a stream's tokens at most this often (default 20; first token and finish at once; 0: every token).",
    )
    p.add_argument("--max-body-bytes", type=int, help="Request bodies above this get 413 (default 32 MiB, as the router).")
    p.add_argument(
        "--max-waiting-requests",
        type=int,
        help="Sequences held beyond the running batch; more get 429 + Retry-After (default 1024).",
    )
    p.add_argument(
        "--embedding-timeout-seconds", type=float, help="An embedding request's wait bound (default 300; then 504)."
    )
    p.add_argument(
        "--engine-stall-seconds",
        type=float,
        help="A busy engine thread without progress this long turns /health 503 (default 120).",
    )
    p.add_argument(
        "--allow-remote-images", action="store_true", default=None, help="Fetch http(s) image URLs."
    )
    p.add_argument(
        "--shutdown-grace-seconds", type=float, help="How long SIGTERM waits for in-flight requests."
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--spare",
        action="store_true",
        default=None,
        help="Start ahead of time: import torch, rehearse a load, then read the model as one JSON line on stdin "
        '({"model": {...}, "served_model_name": "...", "port": N}).',
    )
    args = vars(p.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    from modelplex_runtime.logs import configure_logging
    from modelplex_runtime.settings import RuntimeSettings

    try:
        settings = RuntimeSettings(**parse_args(argv))
        if settings.spare:
            configure_logging(settings.log_level)
            settings = _wait_as_spare(settings)
        entry = settings.load_entry()
    except (ValidationError, ValueError) as exc:
        from modelplex_runtime.failure import report_failure

        report_failure("config", f"invalid configuration: {_one_line(exc)}")
        raise SystemExit(2) from None

    import uvicorn

    from modelplex_runtime.app import RuntimeDeps, create_app
    from modelplex_runtime.failure import report_on_crash

    configure_logging(settings.log_level)
    report_on_crash()
    exit_code = {"code": 0}
    server: uvicorn.Server | None = None

    def on_fatal(reason: str) -> None:
        exit_code["code"] = 1
        if server is not None:
            server.should_exit = True

    app = create_app(settings, entry, RuntimeDeps(on_fatal=on_fatal))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the captured SIGTERM after a graceful shutdown; a drained shutdown is a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(exit_code["code"]))
    server.run()
    if exit_code["code"] or not server.started:
        raise SystemExit(exit_code["code"] or 1)


def _wait_as_spare(settings: RuntimeSettings) -> RuntimeSettings:
    """Pay the start-up costs now, then block until the parent names the model (see ``spare``)."""
    import logging

    import uvicorn  # noqa: F401  (imported ahead: it is on the path from hand-off to listening)

    import modelplex_runtime.app  # noqa: F401
    from modelplex_runtime.engine.prewarm import prewarm
    from modelplex_runtime.spare import READY_LINE, apply_assignment, read_assignment

    log = logging.getLogger("modelplex_runtime")
    seconds = prewarm(settings.device)
    log.info(
        "spare runtime ready; waiting for a model on stdin", extra={"prewarm_seconds": round(seconds, 3)}
    )
    print(READY_LINE, flush=True)
    line = read_assignment(sys.stdin.buffer)
    if line is None:
        log.info("stdin closed before a model was assigned; exiting")
        raise SystemExit(0)
    assigned = apply_assignment(settings, line)
    log.info(
        "spare runtime assigned a model", extra={"model": assigned.served_model_name, "port": assigned.port}
    )
    return assigned


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
    return str(exc)


if __name__ == "__main__":
    main()
