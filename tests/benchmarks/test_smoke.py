"""`python -m benchmarks --smoke` keeps working: the page, its plots and a result in every section.

No figure is asserted (timings stay out of the test suite): only that each comparison produced a numeric
table or recorded why a peer or the comparison could not run.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Routing overhead", "Scale from zero", "Runtime throughput vs vLLM and transformers serve",
            "Constrained decoding", "Unload frees memory",
            "Holding requests")
PLOTS = ("routing_overhead.png", "scale_from_zero.png", "throughput.png", "memory_unload.png", "holding.png")


def _run_smoke(out: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks --smoke``; whatever happens, no process it started outlives the test.

    The benchmark starts routers, peers and backends in sessions of their own, so killing its main
    process alone (as ``subprocess.run`` does on a timeout) would leave them running.
    """
    argv = [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)]
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        seen: dict[int, psutil.Process] = {}
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            seen.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
            proc.kill()
            stdout, stderr = proc.communicate()
            raise AssertionError(f"benchmarks --smoke ran past {timeout:.0f}s:\n{stderr[-4000:]}") from None
        finally:
            for child in seen.values():
                with contextlib.suppress(psutil.Error):
                    child.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _sections(page: str) -> dict[str, str]:
    parts = re.split(r"^## ", page, flags=re.M)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_smoke_run_writes_the_page_and_plots(tmp_path: Path) -> None:
    proc = _run_smoke(tmp_path, timeout=460)
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
