"""Structured logs for the operator and kopf (JSON by default)."""

from __future__ import annotations

import kopf


def configure_logging(log_format: str, level: str) -> None:
    fmt = kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(log_format=fmt, verbose=level.upper() == "DEBUG", debug=False, quiet=level.upper() in {"WARNING", "ERROR"})
