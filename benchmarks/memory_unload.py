"""Comparison 4 — unload frees memory, nothing leaks.

- Resident memory (RSS) of the model processes (router + its runtime children) before a load, while
  loaded, and after an unload, with a real runtime on a tiny model.
- The router's own RSS across many unload/reload cycles (stub runtime: each cycle is a real process start
  and stop, cheap enough to repeat hundreds of times).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import plots
from benchmarks.processes import Proc, child_port
from benchmarks.report import Section
from benchmarks.routing_overhead import MODEL, start_modelplex, stub_command, write_config

MIB = 2**20


@dataclass
class Sizes:
    cycles: int
    repeats: int


def _post(router: Proc, action: str) -> str:
    resp = httpx.post(f"{router.url}/v1/models/{action}", json={"model_id": MODEL}, timeout=300)
    resp.raise_for_status()
    return str(resp.json().get("status"))


def _settle(router: Proc, children: bool) -> None:
    """Wait until the router has (or has not) a runtime child, then a moment for RSS to settle."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (child_port(router) is not None) != children:
        time.sleep(0.05)
    time.sleep(0.5)


def load_unload(model_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        router = start_modelplex(write_config(Path(tmp), str(model_dir), False), [])
        try:
            _settle(router, children=False)
            before_router, before_all = router.rss(), router.rss()
            _post(router, "reload")
            httpx.post(router.url + "/v1/chat/completions", timeout=120,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
            _settle(router, children=True)
            found = child_port(router)
            during_all = router.rss()
            during_runtime = during_all - router.rss(exclude=[found[0]]) if found else float("nan")
            status = _post(router, "unload")
            _settle(router, children=False)
            after_all = router.rss()
        finally:
            router.stop()
    return {"before": before_all / MIB, "during": during_all / MIB, "runtime": during_runtime / MIB,
            "after": after_all / MIB, "router_before": before_router / MIB, "unload_status": status == "unloaded"}


def cycles(n: int) -> list[float]:
    """Router RSS (MiB, without children) after each of ``n`` reload+unload cycles."""
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        router = start_modelplex(write_config(Path(tmp), "stub/fixed-response", False),
                                 ["--runtime-command", stub_command()])
        try:
            for _ in range(n):
                if _post(router, "reload") != "loaded":
                    raise RuntimeError("reload did not load the stub runtime")
                httpx.post(router.url + "/v1/chat/completions", timeout=30,
                           json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
                _post(router, "unload")
                samples.append(router.ps.memory_info().rss / MIB)
        finally:
            router.stop()
    return samples


def section(model_dir: Path, sizes: Sizes, img_dir: Path) -> Section:
    lu = load_unload(model_dir)
    rss = cycles(sizes.cycles)
    tenth = max(1, len(rss) // 10)
    early, late = statistics.median(rss[tenth:2 * tenth]), statistics.median(rss[-tenth:])
    slope = _slope(rss[tenth:]) * 100
    sec = Section("Unload frees memory")
    sec.intro = [
        "RSS of the model processes (the router and the runtime processes it started) around one load and "
        "unload of the tiny random Llama via `POST /v1/models/reload` and `/unload`; then the router's own RSS "
        f"after each of {sizes.cycles} reload + request + unload cycles of the stub runtime.",
    ]
    sec.table("", ["moment", "RSS of router + runtimes (MiB)"], [
        ["before load", f"{lu['before']:.0f}"],
        [f"loaded (runtime alone: {lu['runtime']:.0f})", f"{lu['during']:.0f}"],
        ["after unload", f"{lu['after']:.0f}"],
    ])
    sec.table("", ["cycles", "router RSS first (MiB)", "after 10% (MiB)", "last 10% (MiB)", "max (MiB)",
                   "slope after warm-up (MiB / 100 cycles)"],
              [[str(len(rss)), f"{rss[0]:.1f}", f"{early:.1f}", f"{late:.1f}", f"{max(rss):.1f}", f"{slope:.2f}"]])
    freed = lu["after"] <= lu["before"] * 1.05 + 1
    flat = late - early <= max(2.0, 0.03 * early)
    sec.goals = [
        f"Goal: memory returns to the pre-load level after unload: {lu['before']:.0f} → {lu['during']:.0f} → "
        f"{lu['after']:.0f} MiB -> {'met' if freed else 'NOT met'}.",
        f"Goal: router memory flat over {len(rss)} cycles (after-warm-up median {early:.1f} vs last {late:.1f} "
        f"MiB) -> {'met' if flat else 'NOT met'}.",
    ]
    name = "memory_unload.png"
    plots.lines({"router RSS": (list(range(1, len(rss) + 1)), rss)}, "unload/reload cycle", "MiB",
                f"Router RSS across {len(rss)} unload/reload cycles (runtime loaded/unloaded: "
                f"{lu['before']:.0f} → {lu['during']:.0f} → {lu['after']:.0f} MiB)", img_dir / name)
    sec.plots.append(name)
    sec.data = {"load_unload": lu, "cycles_rss_mib": rss}
    return sec


def _slope(ys: list[float]) -> float:
    if len(ys) < 2:
        return 0.0
    xs = list(range(len(ys)))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
