"""PNG plots of the results (matplotlib, headless)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# one colour per path/server in every plot, so a reader can compare panels at a glance
COLORS = {"direct": "tab:gray", "modelplex": "tab:blue", "modelplex runtime": "tab:blue", "litellm": "tab:orange",
          "vllm-router": "tab:green", "transformers serve": "tab:orange",
          "transformers serve --continuous-batching": "tab:red", "offline limit": "tab:gray",
          "vLLM (CPU)": "tab:green"}


def _med(vals: list[float]) -> float:
    vals = [v for v in vals if not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def routing_overhead(runs_by_backend: dict[str, dict[str, Any]], concurrency: tuple[int, ...], path: Path) -> None:
    fig, axes = plt.subplots(len(runs_by_backend), 3, figsize=(14, 3.8 * len(runs_by_backend)), squeeze=False)
    for row, (backend, runs) in enumerate(runs_by_backend.items()):
        # A backend may have been measured at fewer concurrency levels (vLLM on CPU).
        levels = [c for c in concurrency if c in runs["direct"]["plain"]]
        groups = [f"c={c}" for c in levels]
        proxies = [p for p in runs if p != "direct"]
        added = {p: [_med([s["p50"] - d["p50"] for s, d in zip(runs[p]["plain"][c], runs["direct"]["plain"][c],
                                                                 strict=False)]) * 1000 for c in levels]
                 for p in proxies}
        rps = {p: [_med([s["rps"] for s in runs[p]["plain"][c]]) for c in levels] for p in runs}
        cpu = {p: [_med([s["cpu_per_1000"] for s in runs[p]["plain"][c]]) for c in levels] for p in proxies}
        _bars(axes[row][0], groups, added, "ms", f"{backend}: latency added, p50 (lower is better)")
        _bars(axes[row][1], groups, rps, "requests/s", f"{backend}: throughput (higher is better)")
        _bars(axes[row][2], groups, cpu, "CPU s / 1000 requests", f"{backend}: router CPU (lower is better)")
    _save(fig, path)


def grouped(groups: list[str], series: dict[str, list[float]], ylabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    _bars(ax, groups, series, ylabel, title)
    _save(fig, path)


def stacked(labels: list[str], parts: dict[str, list[float]], ylabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    left = [0.0] * len(labels)
    for name, vals in parts.items():
        ax.barh(labels, vals, left=left, label=name)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars can span the axes
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def lines(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def throughput(groups: list[str], tps: dict[str, list[float]], ttft: dict[str, list[float]], offline: float,
               title: str, path: Path) -> None:
    """Tokens/s per server and concurrency (the offline limit as a line) beside time to first token."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4))
    _bars(left, groups, tps, "generated tokens/s", f"{title}: throughput (higher is better)")
    if not math.isnan(offline):
        left.axhline(offline, color=COLORS["offline limit"], linestyle="--", label="offline limit")
        left.legend(fontsize=8)
    _bars(right, groups, {k: [v * 1000 for v in vals] for k, vals in ttft.items()}, "ms",
          f"{title}: time to first token, p50 (lower is better)")
    right.set_yscale("log")
    _save(fig, path)
