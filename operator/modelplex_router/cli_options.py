"""Router options shared by ``modelplex from-config`` and ``modelplex serve`` (argparse <-> settings)."""

from __future__ import annotations

import argparse
import shlex
import tomllib
from pathlib import Path
from typing import Any

from modelplex_router.settings import RouterSettings


def add_router_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--port", type=int, default=None, help="port to listen on (default 1234)")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--max-wait-seconds",
        type=float,
        default=None,
        help="how long a request waits for its model to load (300)",
    )
    parser.add_argument(
        "--max-waiting-per-model",
        type=int,
        default=None,
        help="requests allowed to wait per model; more get 429 (256)",
    )
    parser.add_argument(
        "--drain-grace-seconds",
        type=float,
        default=None,
        help="how long an unload waits for in-flight requests (30)",
    )
    parser.add_argument(
        "--stall-timeout-seconds",
        type=float,
        default=None,
        help="a runtime that sends nothing for this long ends the request with 504 (120)",
    )
    parser.add_argument(
        "--runtime-command",
        default=None,
        help="command starting one runtime (default: python -m modelplex_runtime)",
    )
    parser.add_argument(
        "--vllm-python",
        default=None,
        help="the Python interpreter of vLLM's virtualenv, for models with engine vllm (default: this one)",
    )
    parser.add_argument(
        "--spare-runtimes",
        type=int,
        default=None,
        help="runtimes kept started ahead (torch imported) for fast cold starts; 0 = off (1)",
    )
    parser.add_argument(
        "--api-keys-file",
        default=None,
        help="JSON file of API keys and their scopes, re-read when it changes (docs/security.md)",
    )
    parser.add_argument(
        "--require-api-keys",
        action="store_true",
        default=None,
        help="refuse to start without API keys instead of serving openly",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument("--log-text", action="store_true", help="plain text logs instead of JSON lines")


def toml_server_section(path: Path) -> dict[str, Any]:
    """host/port from a mistral.rs TOML config's ``[server]`` table (empty for JSON configs)."""
    if path.suffix.lower() != ".toml":
        return {}
    try:
        server = tomllib.loads(path.read_text(encoding="utf-8")).get("server", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {k: server[k] for k in ("host", "port") if isinstance(server, dict) and k in server}


def settings_from_args(
    args: argparse.Namespace, file_defaults: dict[str, Any] | None = None, **extra: Any
) -> RouterSettings:
    """CLI flags over the config file's [server] table over MODELPLEX_ROUTER_* env over defaults."""
    overrides: dict[str, Any] = {**(file_defaults or {}), **extra}
    for name in (
        "host",
        "port",
        "max_wait_seconds",
        "max_waiting_per_model",
        "drain_grace_seconds",
        "stall_timeout_seconds",
        "spare_runtimes",
        "vllm_python",
        "api_keys_file",
        "require_api_keys",
        "log_level",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "runtime_command", None):
        overrides["runtime_command"] = shlex.split(args.runtime_command)
    if getattr(args, "log_text", False):
        overrides["log_json"] = False
    return RouterSettings(**overrides)
