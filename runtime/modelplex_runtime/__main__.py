"""``python -m modelplex_runtime`` / ``modelplex-runtime``: serve one model over HTTP.

The server listens before the weights load (so /health answers at once); a failed load logs the
reason, prints one line to stderr and exits non-zero. SIGTERM drains in-flight requests and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from pydantic import ValidationError


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="modelplex-runtime", description="Serve one model over an OpenAI-compatible API.")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model-json", help="One model entry as JSON (config-file format).")
    p.add_argument("--model-file", help="A JSON file holding one model entry.")
    p.add_argument("--served-model-name", help="Model id served (default: the entry's alias or pipeline name).")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N.")
    p.add_argument("--max-batch-size", type=int, help="Most sequences decoded together (default 32).")
    p.add_argument("--cpu-threads", type=int, help="Torch threads on CPU (default: all cores, but one for batches under 8).")
    p.add_argument("--max-body-bytes", type=int, help="Request bodies above this get 413 (default 8 MiB).")
    p.add_argument("--allow-remote-images", action="store_true", default=None, help="Fetch http(s) image URLs.")
    p.add_argument("--shutdown-grace-seconds", type=float, help="How long SIGTERM waits for in-flight requests.")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = vars(p.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    from modelplex_runtime.settings import RuntimeSettings

    try:
        settings = RuntimeSettings(**parse_args(argv))
        entry = settings.load_entry()
    except (ValidationError, ValueError) as exc:
        print(f"modelplex-runtime: invalid configuration: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None

    import uvicorn

    from modelplex_runtime.app import RuntimeDeps, create_app
    from modelplex_runtime.logs import configure_logging

    configure_logging(settings.log_level)
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


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        )
    return str(exc)


if __name__ == "__main__":
    main()
