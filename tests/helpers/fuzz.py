"""Run schemathesis (the CLI, as a real client) against a live server's OpenAPI schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def run_schemathesis(
    base_url: str, max_examples: int, workdir: Path, headers: dict[str, str] | None = None, seed: int = 1
) -> str:
    """Fuzz every operation of ``base_url``/openapi.json; fail on any 5xx or crash. Returns the summary."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--url",
        base_url,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--request-timeout",
        "60",
        "--no-color",
    ]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"\d+ passed", output), output[-3000:]
    return output
