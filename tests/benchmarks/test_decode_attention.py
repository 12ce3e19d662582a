"""`python -m benchmarks.decode_attention` keeps working: a row per batch size with both kernels' step times,
and it names the kernel the engine picks for the dtype (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("dtype", "uses"), [("bf16", "fused"), ("f32", "matmuls")])
def test_a_tiny_run_times_both_kernels(dtype: str, uses: str) -> None:
    argv = [sys.executable, "-m", "benchmarks.decode_attention", "--hidden", "64", "--layers", "1", "--heads", "4",
            "--dtype", dtype, "--batch", "1,3", "--context", "9", "--repeats", "1", "--kv-cache-gib", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"the engine uses: {uses}" in done.stdout
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == [1, 3]
    for row in rows:
        fused, matmuls = (float(c) for c in row.strip("|").split("|")[1:3])
        assert fused >= 0 and matmuls >= 0
