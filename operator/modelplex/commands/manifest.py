"""``modelplex manifest --file config.json --name NAME``: a config file as a MultiModel manifest.

The entries are validated with the same schema as the router's config file and written in config-file
form (kind keys, snake_case, `kubernetes` settings kept), so `kubectl apply -f -` gets what
``modelplex from-config`` would serve.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelplex_spec import ModelplexConfig

API_VERSION = "modelplex.dev/v1alpha1"
KIND = "MultiModel"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The operator names each model's Deployment "<name>-<label>"; a short name leaves room for labels.
MAX_NAME = 40


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "manifest",
        help="turn a config file into a MultiModel manifest for Kubernetes",
        description="Validate a JSON or TOML multi-model config and print it as a MultiModel resource "
        "(modelplex.dev/v1alpha1) for `kubectl apply -f -`.",
    )
    parser.add_argument("--file", "-f", required=True, type=Path, help="the config file (.json or .toml)")
    parser.add_argument("--name", required=True, help="metadata.name of the MultiModel")
    parser.add_argument(
        "--namespace", "-n", default=None, help="metadata.namespace (default: none, kubectl's)"
    )
    parser.add_argument(
        "--default-model-id",
        default=None,
        help="the default model (alias or pipeline name); default: the first",
    )
    parser.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml", help="output format")
    parser.set_defaults(func=run)


def build_manifest(config: ModelplexConfig, name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "defaultModelId": config.default_model_id,
            "models": {m.label: m.entry.to_config_dict() for m in config.models},
        },
    }


def name_problem(name: str) -> str | None:
    if not _DNS_LABEL.match(name):
        return f"--name {name!r} must be lowercase letters, digits and '-', starting with a letter"
    if len(name) > MAX_NAME:
        return f"--name {name!r} is longer than {MAX_NAME} characters"
    return None


def run(args: argparse.Namespace) -> int:
    from modelplex_spec import ConfigError, load_config_file

    problem = name_problem(args.name)
    if problem:
        print(f"modelplex manifest: {problem}", file=sys.stderr)
        return 2
    try:
        config = load_config_file(args.file, args.default_model_id)
    except ConfigError as exc:
        print(f"modelplex manifest: {args.file} cannot be served:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    manifest = build_manifest(config, args.name, args.namespace)
    if args.output == "json":
        print(json.dumps(manifest, indent=2))
        return 0
    try:
        import yaml
    except ImportError:
        print(
            "modelplex manifest: YAML output needs PyYAML (pip install 'modelplex[operator]'); "
            "or use --output json",
            file=sys.stderr,
        )
        return 2
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0
