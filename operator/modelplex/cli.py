"""The ``modelplex`` command: an argparse dispatcher over the subcommand modules in ``modelplex.commands``.

Each module exposes ``add_parser(subparsers)``, which registers its subcommand and sets
``func=<callable(args) -> int>``. Modules are imported only when the parser is built, and they import
their heavy dependencies (servers, Kubernetes clients) inside ``func``, so ``modelplex --help`` and
``modelplex validate`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from types import ModuleType

COMMAND_PACKAGE = "modelplex.commands"
COMMAND_MODULES: tuple[str, ...] = ("from_config", "serve", "validate", "chat", "manifest")


def load_command_modules(names: Sequence[str]) -> dict[str, ModuleType | None]:
    """Each name's imported module, or None for a module that does not exist.

    Only a module that is itself absent counts as missing; an import error inside a module propagates,
    so a broken command fails loudly instead of vanishing from the help.
    """
    modules: dict[str, ModuleType | None] = {}
    for name in names:
        qualified = f"{COMMAND_PACKAGE}.{name}"
        try:
            modules[name] = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            modules[name] = None
    return modules


def _version() -> str:
    try:
        return importlib.metadata.version("modelplex")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _unavailable(module_name: str) -> int:
    print(
        f"modelplex: this installation lacks {COMMAND_PACKAGE}.{module_name}; reinstall modelplex",
        file=sys.stderr,
    )
    return 2


def _add_unavailable(subparsers: argparse._SubParsersAction, name: str) -> None:
    parser = subparsers.add_parser(name.replace("_", "-"), help="(not available in this installation)")
    parser.set_defaults(func=lambda _args: _unavailable(name))


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command of ``names`` (default: all of ``COMMAND_MODULES``)."""
    parser = argparse.ArgumentParser(
        prog="modelplex",
        description="Many LLMs behind one OpenAI-compatible endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in load_command_modules(COMMAND_MODULES if names is None else names).items():
        if module is None:
            _add_unavailable(subparsers, name)
        else:
            module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
