"""Comparison — the cost of constrained decoding: tokens/s with and without a ``json_schema`` response format.

One runtime, the same prompts and lengths: free requests (``ignore_eos``) against requests whose answer
must follow a JSON schema with a long string field (``minLength`` past ``max_tokens``, so every constrained
answer also runs to ``max_tokens`` and both sides generate the same number of tokens). Runs alternate
(free, constrained, free, ...) so drift on the shared machine hits both alike. Goal: the constraint
costs less than 15% of throughput at concurrency 1 and 16.

    python -m benchmarks.structured --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.processes import start_server
from benchmarks.report import Section, fmt, spread

SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "minLength": 2000}},
          "required": ["title"], "additionalProperties": False}
GOAL = 0.15


@dataclass
class Sizes:
    mode: str
    repeats: int

    @property
    def shape(self) -> dict[str, int]:
        if self.mode == "full":
            return {"hidden": 256, "layers": 4, "max_tokens": 64, "requests_per_user": 4}
        if self.mode == "quick":
            return {"hidden": 128, "layers": 2, "max_tokens": 32, "requests_per_user": 2}
        return {"hidden": 64, "layers": 1, "max_tokens": 16, "requests_per_user": 1}

    @property
    def concurrency(self) -> tuple[int, ...]:
        return (1, 16) if self.mode != "smoke" else (1, 4)


def body(i: int, max_tokens: int, constrained: bool) -> dict[str, Any]:
    b: dict[str, Any] = {"messages": [{"role": "user", "content": f"Describe request {i} in a title."}],
                         "max_tokens": max_tokens, "temperature": 1.0, "seed": i}
    if constrained:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "title", "schema": SCHEMA}}
    else:
        b["ignore_eos"] = True
    return b


async def run(url: str, concurrency: int, requests: int, max_tokens: int, constrained: bool) -> float:
    """Generated tokens per second over ``requests`` non-streamed requests, ``concurrency`` at a time."""
    tokens = 0
    todo = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def user() -> None:
            nonlocal tokens
            while todo:
                i = todo.pop()
                resp = await client.post("/v1/chat/completions", json=body(i, max_tokens, constrained))
                resp.raise_for_status()
                tokens += resp.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return tokens / wall


def measure(sizes: Sizes) -> dict[str, Any]:
    from modelplex_runtime.engine.tiny import make_tiny_llama

    shape = sizes.shape
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_llama(Path(tmp) / "model", hidden_size=shape["hidden"], num_layers=shape["layers"],
                                    num_heads=max(4, shape["hidden"] // 64))
        entry = json.dumps({"Plain": {"model_id": str(model_dir)}, "alias": "bench"})
        proc = start_server(lambda port: [sys.executable, "-m", "modelplex_runtime", "--port", str(port),
                                          "--model-json", entry, "--log-level", "warning"], "/ready", 300)
        try:
            # warm-up (not in the smoke run), and the check that both sides generate max_tokens each
            for constrained in (False, True) if sizes.mode != "smoke" else ():
                asyncio.run(run(proc.url, 2, 2, shape["max_tokens"], constrained))
            probe = httpx.post(proc.url + "/v1/chat/completions", json=body(0, shape["max_tokens"], True), timeout=300)
            probe.raise_for_status()
            assert probe.json()["usage"]["completion_tokens"] == shape["max_tokens"], probe.text
            assert probe.json()["choices"][0]["message"]["content"].startswith("{")
            results: dict[int, dict[str, list[float]]] = {}
            for c in sizes.concurrency:
                n = max(2, c * shape["requests_per_user"])
                runs: dict[str, list[float]] = {"free": [], "json_schema": []}
                for _ in range(sizes.repeats):
                    runs["free"].append(asyncio.run(run(proc.url, c, n, shape["max_tokens"], False)))
                    runs["json_schema"].append(asyncio.run(run(proc.url, c, n, shape["max_tokens"], True)))
                results[c] = runs
        finally:
            proc.stop()
    return {"shape": shape, "repeats": sizes.repeats, "results": results}


def section(sizes: Sizes) -> Section:
    data = measure(sizes)
    shape = data["shape"]
    sec = Section("Constrained decoding")
    sec.intro.append(
        f"One modelplex runtime (random Llama, hidden {shape['hidden']}, {shape['layers']} layers), chat completions "
        f"of {shape['max_tokens']} tokens at temperature 1.0: free (`ignore_eos`) against a `json_schema` response "
        "format enforced by llguidance (a long string field, so both run to `max_tokens`). Runs alternate free / "
        f"constrained, {data['repeats']} pair(s) per concurrency; medians (min–max).")
    rows = []
    met = True
    for c, runs in sorted(data["results"].items()):
        ratios = [js / free for free, js in zip(runs["free"], runs["json_schema"], strict=True)]
        ratio = statistics.median(ratios)
        met = met and ratio >= 1 - GOAL
        rows.append([str(c), spread(runs["free"]), spread(runs["json_schema"]), fmt(ratio * 100, 0) + "%"])
    sec.table("", ["concurrency", "free tokens/s", "json_schema tokens/s", "constrained / free"], rows)
    sec.goals.append(f"Goal: constrained decoding costs less than {GOAL:.0%} of throughput at every concurrency: "
                     f"{'met' if met else 'not met'}")
    sec.data = data
    return sec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(section(Sizes(mode, args.repeats or (3 if mode == "full" else 1))).render("img/"))


if __name__ == "__main__":
    main()
