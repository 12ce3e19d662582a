"""Comparison 5 — holding requests: a burst of concurrent requests to an unloaded model.

The backend is the stub runtime with a load delay (``/ready`` turns 200 after it), so the figures are the
router's waiting room, not a model load. Loads are counted from the router's /metrics.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import plots
from benchmarks.loadgen import burst
from benchmarks.processes import Proc
from benchmarks.report import Section, spread
from benchmarks.routing_overhead import MODEL, start_modelplex, stub_command, write_config


@dataclass
class Sizes:
    requests: int
    load_delay: float
    low_wait: float
    repeats: int


def loads(url: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in family.samples:
            if s.name == "modelplex_model_loads_total" and s.labels.get("result") == "success":
                total += s.value
    return total


def _router(workdir: Path, sizes: Sizes, extra: list[str]) -> Proc:
    return start_modelplex(write_config(workdir, "stub/fixed-response", False),
                           ["--runtime-command", stub_command(sizes.load_delay),
                            "--max-waiting-per-model", str(sizes.requests * 2), *extra])


def _phase(sizes: Sizes, extra: list[str], timeout: float) -> list[dict[str, float]]:
    out = []
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with tempfile.TemporaryDirectory() as tmp:
        router = _router(Path(tmp), sizes, extra)
        try:
            for _ in range(sizes.repeats):
                httpx.post(router.url + "/v1/models/unload", json={"model_id": MODEL}, timeout=60)
                before = loads(router.url)
                res = asyncio.run(burst(router.url, "/v1/chat/completions", body, sizes.requests, timeout))
                # a refused request does not cancel the load: let it finish before counting
                asyncio.run(asyncio.sleep(sizes.load_delay + 1))
                out.append({"ok": res.statuses.get(200, 0), "s503": res.statuses.get(503, 0),
                            "retry_after": res.retry_after, "other": res.errors - res.statuses.get(503, 0)
                            - res.transport_errors, "hung": res.transport_errors, "wall": res.wall,
                            "loads": loads(router.url) - before})
        finally:
            router.stop()
    return out


def section(sizes: Sizes, img_dir: Path) -> Section:
    generous = _phase(sizes, [], timeout=120)
    low = _phase(sizes, ["--max-wait-seconds", str(sizes.low_wait)], timeout=sizes.low_wait + 30)
    sec = Section("Holding requests")
    sec.intro = [
        f"{sizes.requests} concurrent chat requests (one connection each) to an unloaded model whose runtime "
        f"(the stub) becomes ready {sizes.load_delay:g} s after start; {sizes.repeats} repeat(s), the model "
        f"unloaded before each. Router: `modelplex from-config` with `--max-waiting-per-model "
        f"{sizes.requests * 2}` (the default waiting room is 256: more get 429 at once). Then the same with "
        f"`--max-wait-seconds {sizes.low_wait:g}`. A request with no answer within {sizes.low_wait + 30:g} s "
        "counts as hung.",
    ]
    rows = []
    for name, runs in (("default wait (300 s)", generous), (f"wait bound {sizes.low_wait:g} s", low)):
        rows.append([name, spread([r["loads"] for r in runs], digits=0), spread([r["ok"] for r in runs], digits=0),
                     spread([r["s503"] for r in runs], digits=0), spread([r["retry_after"] for r in runs], digits=0),
                     spread([r["other"] for r in runs], digits=0), spread([r["hung"] for r in runs], digits=0),
                     spread([r["wall"] for r in runs], digits=2)])
    sec.table("", ["setting", "loads", "200", "503", "503 with Retry-After", "other errors", "hung",
                   "time to last answer s"], rows)
    one_load = all(r["loads"] == 1 for r in generous)
    clean = all(r["ok"] == sizes.requests for r in generous)
    refused_ok = all(r["s503"] == r["retry_after"] and r["hung"] == 0 and r["ok"] + r["s503"] == sizes.requests
                     for r in low)
    sec.goals = [
        f"Goal: exactly one load, zero errors -> {'met' if one_load and clean else 'NOT met'}.",
        f"Goal: with the low bound every refused request gets 503 + Retry-After, none hangs -> "
        f"{'met' if refused_ok else 'NOT met'}.",
    ]
    name = "holding.png"
    plots.grouped(["loads", "200", "503 + Retry-After", "hung"],
                  {"default wait": [sum(r["loads"] for r in generous) / len(generous),
                                    sum(r["ok"] for r in generous) / len(generous),
                                    sum(r["retry_after"] for r in generous) / len(generous),
                                    sum(r["hung"] for r in generous) / len(generous)],
                   f"wait bound {sizes.low_wait:g} s": [sum(r["loads"] for r in low) / len(low),
                                                         sum(r["ok"] for r in low) / len(low),
                                                         sum(r["retry_after"] for r in low) / len(low),
                                                         sum(r["hung"] for r in low) / len(low)]},
                  "requests (mean per run)", f"{sizes.requests} concurrent requests to an unloaded model",
                  img_dir / name)
    sec.plots.append(name)
    sec.data = {"default": generous, "low_wait": low}
    return sec
