"""``modelplex from-config --file F``: serve every model of a multi-model config behind one endpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "from-config",
        help="serve the models of a JSON or TOML config behind one OpenAI-compatible endpoint",
        description="Start the router with each model's runtime as a local process. Models load on their "
        "first request (or at start when pinned/preload) and can be unloaded and reloaded over HTTP.",
    )
    parser.add_argument(
        "--file", "-f", "--config", dest="file", required=True, type=Path, help="the config file"
    )
    parser.add_argument(
        "--default-model-id",
        default=None,
        help="the default model (alias or pipeline name); default: the first",
    )
    # Imported here, not at module top, so `modelplex --help` does not import the router.
    from modelplex_router.cli_options import add_router_options

    add_router_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modelplex_router.cli_options import settings_from_args, toml_server_section
    from modelplex_router.config_paths import rebase_relative_paths
    from modelplex_router.server import run as run_router
    from modelplex_spec import ConfigError, load_config_file

    try:
        config = rebase_relative_paths(load_config_file(args.file, args.default_model_id), args.file)
    except ConfigError as exc:
        print(f"modelplex: {args.file} cannot be served:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    settings = settings_from_args(
        args,
        toml_server_section(args.file),
        config_file=str(args.file),
        default_model_id=args.default_model_id,
    )
    try:
        run_router(settings, config)
    except ConfigError as exc:  # an unusable keys file
        print("modelplex: cannot start the router:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    return 0
