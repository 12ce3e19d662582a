"""``python -m modelplex``: the same as the ``modelplex`` command."""

import sys

from modelplex.cli import main

if __name__ == "__main__":
    sys.exit(main())
