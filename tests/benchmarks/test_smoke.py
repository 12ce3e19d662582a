"""`python -m benchmarks --smoke` keeps working: the page, its plots and a result in every section.

No figure is asserted (timings stay out of the test suite): only that each comparison produced a numeric
table or recorded why a peer or the comparison could not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Routing overhead", "Scale from zero", "Runtime throughput vs transformers serve", "Constrained decoding",
            "Unload frees memory",
            "Holding requests")
PLOTS = ("routing_overhead.png", "scale_from_zero.png", "throughput.png", "memory_unload.png", "holding.png")


def _sections(page: str) -> dict[str, str]:
    parts = re.split(r"^## ", page, flags=re.M)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_smoke_run_writes_the_page_and_plots(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=460)
    assert proc.returncode == 0, proc.stderr[-4000:]
    page = (tmp_path / "benchmarks.md").read_text()
    assert "python -m benchmarks --smoke" in page
    sections = _sections(page)
    for title in SECTIONS:
        body = sections.get(title)
        assert body is not None, f"section {title!r} missing"
        assert "This comparison failed" not in body, body[:2000]
        numeric_rows = [ln for ln in body.splitlines() if ln.startswith("| ") and re.search(r"\| -?\d+(\.\d+)? ", ln)]
        assert numeric_rows, f"section {title!r} has no numeric row:\n{body[:2000]}"
        assert "Goal" in body
    routing = sections["Routing overhead"]
    for peer in ("litellm", "vllm-router"):
        # each peer is measured, or the page says why it could not be
        assert f"| {peer} |" in routing or f"**{peer} unavailable**" in routing
    for name in PLOTS:
        png = tmp_path / "img" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
