"""``modelplex validate --file F``: check a config file and list what it would serve."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelplex_spec import ModelplexConfig

COLUMNS = (
    ("api_id", "API ID"),
    ("canonical_name", "CANONICAL NAME"),
    ("kind", "KIND"),
    ("engine", "ENGINE"),
    ("label", "LABEL"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a multi-model config file and list its models",
        description="Parse a JSON or TOML multi-model config and print each model's API id, canonical "
        "name, kind and engine; exit 1 listing every problem when the config cannot be served (settings "
        "the model's engine cannot honour included).",
    )
    parser.add_argument("--file", "-f", required=True, type=Path, help="the config file (.json or .toml)")
    parser.add_argument(
        "--default-model-id",
        default=None,
        help="the default model (alias or pipeline name); default: the first",
    )
    parser.add_argument("--json", dest="as_json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=run)


def model_rows(config: ModelplexConfig) -> list[dict[str, Any]]:
    return [
        {
            "api_id": m.entry.api_id,
            "canonical_name": m.entry.pipeline_name,
            "kind": m.entry.kind.value,
            "engine": m.entry.engine,
            "label": m.label,
            "default": m.entry.api_id == config.default_model_id,
        }
        for m in config.models
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns; the default model's row ends with ``(default)``."""
    table = [[title for _, title in COLUMNS]] + [[str(row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = []
    for index, line in enumerate(table):
        text = "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        if index > 0 and rows[index - 1]["default"]:
            text += "  (default)"
        lines.append(text.rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # pydantic loads only when a config is validated, not for every CLI start.
    from modelplex_spec import ConfigError, load_config_file

    try:
        config = load_config_file(args.file, args.default_model_id)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if args.as_json:
            print(json.dumps({"valid": False, "problems": exc.problems}, indent=2))
        return 1
    rows = model_rows(config)
    if args.as_json:
        print(
            json.dumps({"valid": True, "default_model_id": config.default_model_id, "models": rows}, indent=2)
        )
    else:
        print(format_table(rows))
    return 0
