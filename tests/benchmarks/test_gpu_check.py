"""`python -m benchmarks.gpu_check` works before a GPU machine's minutes are spent on it: its CPU smoke run
(one tiny model, f32) goes through the same checks and the same served comparison, and its checks pass.

The checks that need CUDA (device-to-host traffic, the out-of-memory one) must say that they did not run,
not pass. No figure is asserted beyond being a positive number.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--smoke", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "MODELPLEX_BENCH_VLLM_PYTHON"}
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            for child in children:  # the runtime it serves from
                with contextlib.suppress(psutil.Error):
                    child.kill()
            _, stderr = proc.communicate()
            raise AssertionError(f"gpu_check --device cpu --smoke ran past {timeout:.0f}s:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def test_cpu_smoke_run_passes_its_checks(tmp_path: Path) -> None:
    done = _run(tmp_path, 600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "all checks passed" in done.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = report["checks"]
    assert checks["batch_path"] == "packed"
    assert checks["batched_equals_solo"] is True
    assert checks["small_kv_budget_equals_solo"] is True
    assert checks["small_kv_budget_preempted"] is True and checks["preemptions"] > 0
    assert checks["device_to_host_copies"] == "not run: needs a CUDA device"
    assert checks["oom_fails_the_long_one"] == "not run: needs a CUDA device"
    served = report["tiny"]
    assert report["servers"] == ["modelplex runtime"]
    for c in ("1", "4"):
        point = served["modelplex runtime"][c]
        assert point["tps"] > 0 and point["requests"] == 2 * int(c)
    assert served["offline batched generate (16 prompts)"] > 0
    assert report["plan"]["device"] == "cpu" and report["plan"]["dtype"] == "f32"
