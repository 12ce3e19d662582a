"""checkov in its own virtualenv under .tools/ (it pins many libraries the project's venv must not take)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".tools" / "checkov-venv"
CHECKOV = "checkov==3.3.30"


def ensure_checkov() -> Path:
    exe = VENV / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", CHECKOV], check=True)
    return exe


def checkov_env() -> dict[str, str]:
    # Offline: no download of Prisma Cloud's check-id mapping, no version check.
    return {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "SKIP_CHECKOV_VERSION_CHECK": "true",
    }
