"""``python -m modelplex_router`` / ``modelplex-router``: the router configured from MODELPLEX_ROUTER_* env."""

from __future__ import annotations

import sys

from modelplex_router.server import run
from modelplex_router.settings import RouterSettings
from modelplex_spec import ConfigError


def main() -> int:
    settings = RouterSettings()
    try:
        run(settings)
    except ConfigError as exc:
        print("modelplex-router: invalid config:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
