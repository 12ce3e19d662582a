"""Subcommands of ``modelplex``, one module each (listed in ``modelplex.cli.COMMAND_MODULES``).

A module exposes ``add_parser(subparsers) -> None``: it adds its subparser and sets
``func=<callable(args) -> int>`` (the exit status). Heavy imports go inside ``func``.
"""
