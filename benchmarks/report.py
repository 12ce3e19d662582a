"""The results model (one section per comparison) and the markdown page it renders to."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Section:
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # caption, header, rows
    goals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # file names under the page's img/ folder
    data: dict[str, object] = field(default_factory=dict)

    def table(self, caption: str, header: list[str], rows: list[list[str]]) -> None:
        self.tables.append((caption, header, rows))

    def render(self, img_prefix: str) -> str:
        out = [f"## {self.title}", ""]
        for paragraph in self.intro:
            out += [paragraph, ""]
        for name in self.plots:
            out += [f"![{self.title}]({img_prefix}{name})", ""]
        for caption, header, rows in self.tables:
            if caption:
                out += [caption, ""]
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        out += [f"- {g}" for g in self.goals]
        if self.goals:
            out.append("")
        for paragraph in self.notes:
            out += [paragraph, ""]
        return "\n".join(out).rstrip() + "\n"


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median (min–max)`` of the repeated runs; just the value when there is one run."""
    vals = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{fmt(statistics.median(vals), digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"


def median(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; load average at start "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (a shared VM: other work runs alongside, hence medians "
            "over repeated, interleaved runs)")


def render_page(sections: list[Section], command: str, started: float, img_prefix: str, keep: str = "") -> str:
    head = [
        "# Benchmarks",
        "",
        "modelplex against the tools users already know, measured on the same machine, the same backend and the "
        "same requests, in the same run (`benchmarks/`). Figures are medians over repeated runs with the spread "
        "(min–max) in brackets. Regenerate with:",
        "",
        f"    {command}",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {time.time() - started:.0f} s. "
        f"Machine: {machine()}.",
        "",
        "Sizes: `--smoke` (seconds, for the test suite; it leaves out `engines`, `replicas` and vLLM), `--quick` (a few minutes), "
        "full by default; `--repeats N`, `--only routing,scale,throughput,structured,memory,holding,engines,replicas`, "
        "`--out DIR`. Raw figures go to `benchmarks.json` next to this page. The peers run from virtualenvs of their "
        "own, which the full and quick runs create when they are missing (`benchmarks/peers.py`): LiteLLM and "
        "vllm-router in `.venv-peers` (`litellm[proxy]` pins `huggingface_hub<2` and `rich<14` and would downgrade "
        "both in the runtime's environment), vLLM's CPU build in the venv of `.ci/vllm-venv.sh`. "
        "`MODELPLEX_BENCH_PEER_BIN` and `MODELPLEX_BENCH_VLLM_PYTHON` point at existing installs instead.",
        "",
        "A peer that is missing or fails to start is recorded in its section with the error; the rest still run.",
        "",
    ]
    body = [s.render(img_prefix) for s in sections]
    return "\n".join(head) + "\n" + "\n".join(body) + (("\n" + keep.strip() + "\n") if keep.strip() else "")


def extract_section(text: str, title: str) -> str:
    """The ``## title`` section of an existing page (to carry over what this run did not regenerate)."""
    m = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    return m.group(0) if m else ""


def merge_sections(page: str, sections: list[Section], img_prefix: str) -> str:
    """``page`` with each of ``sections`` replacing the section of the same title (appended when new)."""
    for sec in sections:
        rendered = sec.render(img_prefix) + "\n"
        existing = extract_section(page, sec.title)
        page = page.replace(existing, rendered, 1) if existing else page.rstrip("\n") + "\n\n" + rendered
    return page


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
