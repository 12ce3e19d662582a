"""`python -m benchmarks.engine_vs_offline` keeps working: a row per requested round, each with the engine's
in-process and the served figures beside the offline one and the CPU split of the served run. No figure is
asserted beyond being positive or, for a CPU share read in clock ticks, not negative (timings stay out of the
test suite)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_measures_every_part() -> None:
    argv = [sys.executable, "-m", "benchmarks.engine_vs_offline", "--hidden", "64", "--layers", "1",
            "--prompt-words", "6", "--max-tokens", "4", "--requests", "8", "--concurrency", "4", "--rounds", "2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        offline, engine, served = (float(c) for c in cells[1:4])
        assert offline > 0 and engine > 0 and served > 0
        assert cells[4].endswith("%") and cells[5].endswith("%")
        cpu = [float(x) for x in cells[6].split(",")]
        # CPU seconds per second of the client, the runtime's event loop and its other threads. Each is read at
        # clock-tick resolution, so one can round to zero on a run this short; the runtime as a whole did work.
        assert len(cpu) == 3 and all(x >= 0 for x in cpu)
        assert cpu[1] + cpu[2] > 0
    assert "medians: engine" in done.stdout
