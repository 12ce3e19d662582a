"""Spare runtimes in the local backend: a cold start takes a runtime that is already warm, and the
pool is topped up behind it; a runtime command that cannot be a spare turns the pool off, not the router."""

from __future__ import annotations

from pathlib import Path

import openai
import psutil
import pytest

from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration


def _spares(router: RouterProcess) -> list[psutil.Process]:
    return [p for p in router.runtime_processes() if "--spare" in p.cmdline()]


def _ask(router: RouterProcess, model: str) -> str:
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    return reply.model


def test_a_cold_start_takes_the_spare_and_the_pool_refills(tmp_path: Path, tiny_llama_dir: Path) -> None:
    config = {"tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}}}
    router = start_router(tmp_path / "router", config, fake=False, args=["--spare-runtimes", "1"])
    try:
        router.wait_for(lambda: router.metric("modelplex_spare_runtimes") == 1, 60, "a warm spare runtime")
        [first] = _spares(router)
        assert router.statuses()["tiny"] == "unloaded"

        assert _ask(router, "tiny") == "tiny"
        assert f"handing tiny to spare runtime {first.pid}" in router.log_tail(200)
        # The spare became the model's runtime; a fresh spare waits behind it.
        router.wait_for(lambda: router.metric("modelplex_spare_runtimes") == 1, 60, "a new warm spare")
        assert first.is_running()
        [second] = [p for p in _spares(router) if p.pid != first.pid]

        unloaded = router.post("/v1/models/unload", {"model_id": "tiny"})
        assert unloaded.json()["status"] == "unloaded"
        router.wait_for(
            lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE, 30, "unload"
        )
        assert [p.pid for p in router.runtime_processes()] == [second.pid]

        # The next cold start takes the second spare.
        assert _ask(router, "tiny") == "tiny"
        assert f"handing tiny to spare runtime {second.pid}" in router.log_tail(200)
        assert router.statuses()["tiny"] == "loaded"
    finally:
        router.stop()


def test_a_runtime_command_without_spare_support_turns_the_pool_off(tmp_path: Path) -> None:
    config = {"a": {"alias": "a", "Plain": {"model_id": "fake/a"}}}
    router = start_router(tmp_path / "router", config, args=["--spare-runtimes", "1"])
    try:
        router.wait_for(
            lambda: "spare runtimes turned off after 3 failed starts" in router.log_tail(200),
            60,
            "the pool to give up",
        )
        assert router.metric("modelplex_spare_runtimes") == 0
        assert _ask(router, "a") == "a"  # cold starts still work
        assert "the following arguments are required" in router.log_tail(200)  # the reason is logged
    finally:
        router.stop()
