"""Pay a runtime's one-time start-up costs before it knows its model (a spare runtime).

A cold start spends most of its time outside the weights: importing torch and transformers, the lazily
imported parts of transformers that the first ``from_pretrained`` pulls in (model code, tokenizer
classes, generation utilities), and the first forward pass (kernel dispatch set-up, CUDA context).
A rehearsal does all of them once, through the same loader and engine a real model uses, on a
throwaway random model written to a temporary directory.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import threading
import time
from contextlib import suppress

from modelplex_runtime.engine_api import Engine, EngineOptions, SamplingParams, TokenEvent
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_runtime.engine")

# Model code for the architectures most served, imported ahead: transformers imports it on the first
# from_pretrained of each architecture, which the rehearsal (a Llama) covers for Llama only.
COMMON_ARCHITECTURES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "bert", "llava", "clip",
)  # fmt: skip


def prewarm(device: str = "auto") -> float:
    """Import, load and run a throwaway model on ``device``; returns the seconds spent.

    A failing rehearsal is logged and ignored: it only saves time, and the real load reports any
    real problem with the model itself.
    """
    started = time.perf_counter()
    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine.tiny import make_tiny_llama

    for name in COMMON_ARCHITECTURES:
        with suppress(Exception):
            importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    try:
        with tempfile.TemporaryDirectory(prefix="modelplex-prewarm-") as tmp:
            model_dir = make_tiny_llama(
                tmp, hidden_size=16, num_layers=1, num_heads=2, vocab_size=300, max_position_embeddings=64
            )
            entry = ModelEntry.model_validate({"Plain": {"model_id": str(model_dir)}})
            engine = load_engine(entry, EngineOptions(device=device, max_batch_size=2))
            try:
                _generate_once(engine, engine.tokenize_chat([{"role": "user", "content": "hi"}]))
            finally:
                engine.shutdown()
    except Exception:
        log.warning("the spare runtime's rehearsal failed; its first load will be slower", exc_info=True)
    return time.perf_counter() - started


def _generate_once(engine: Engine, prompt: list[int]) -> None:
    done = threading.Event()

    def on_event(event: TokenEvent) -> None:
        if event.finish_reason is not None or event.error is not None:
            done.set()

    engine.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True), on_event)
    if not done.wait(60):
        raise TimeoutError("the rehearsal generation did not finish within 60 s")
