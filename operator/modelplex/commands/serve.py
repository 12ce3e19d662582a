"""``modelplex serve -m MODEL_ID``: single-model mode, the same router in front of one model."""

from __future__ import annotations

import argparse
import sys

KINDS = ("Plain", "VisionPlain", "GGUF", "Embedding")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve one model behind the OpenAI-compatible router",
        description="Single-model mode: like from-config with a one-entry config. The model loads at start.",
    )
    parser.add_argument(
        "-m", "--model-id", required=True, help="Hugging Face repo id or local model directory"
    )
    parser.add_argument("--alias", default=None, help="the API model id (default: the model id)")
    parser.add_argument("--kind", default="Plain", choices=KINDS, help="model kind (default Plain)")
    parser.add_argument("--dtype", default=None, help="auto, bf16, f16 or f32")
    parser.add_argument(
        "--isq", "--in-situ-quant", dest="isq", default=None, help="in-situ quantization, e.g. Q8_0"
    )
    parser.add_argument(
        "--quantized-filename", default=None, help="GGUF only: the .gguf file inside the model id"
    )
    parser.add_argument("--tok-model-id", default=None, help="GGUF only: where the tokenizer lives")
    parser.add_argument(
        "--engine", default=None, choices=("transformers", "vllm"), help="the engine (default transformers)"
    )
    from modelplex_router.cli_options import add_router_options

    add_router_options(parser)
    parser.set_defaults(func=run)


def entry_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The one config entry ``serve`` runs (mistral.rs's entry format)."""
    selector: dict[str, object] = {}
    if args.kind == "GGUF":
        selector["quantized_model_id"] = args.model_id
        if args.quantized_filename:
            selector["quantized_filename"] = args.quantized_filename
        if args.tok_model_id:
            selector["tok_model_id"] = args.tok_model_id
    else:
        selector["model_id"] = args.model_id
    if args.dtype:
        selector["dtype"] = args.dtype
    entry: dict[str, object] = {args.kind: selector, "preload": True}
    if args.alias:
        entry["alias"] = args.alias
    if args.isq:
        entry["in_situ_quant"] = args.isq
    if args.engine:
        entry["engine"] = args.engine
    return entry


def run(args: argparse.Namespace) -> int:
    from modelplex_router.cli_options import settings_from_args
    from modelplex_router.server import run as run_router
    from modelplex_spec import ConfigError, parse_config

    try:
        config = parse_config({args.alias or args.model_id: entry_from_args(args)})
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"modelplex: {problem}", file=sys.stderr)
        return 2
    try:
        run_router(settings_from_args(args), config)
    except ConfigError as exc:  # an unusable keys file
        for problem in exc.problems:
            print(f"modelplex: {problem}", file=sys.stderr)
        return 2
    return 0
