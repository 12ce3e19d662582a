"""Readiness while loading, a failed load, and SIGTERM draining."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers.runtime_process import launch_runtime
from modelplex_runtime.app import RuntimeDeps, create_app
from modelplex_runtime.engine_api import Engine, EngineOptions, SamplingParams
from modelplex_runtime.settings import RuntimeSettings
from modelplex_spec import ModelEntry
from modelplex_spec.failure import decode_failure


def test_ready_is_503_while_loading_then_reports_the_load_error() -> None:
    release = threading.Event()
    fatal: list[str] = []

    def slow_failing_loader(entry: ModelEntry, options: EngineOptions) -> Engine:
        release.wait(10)
        raise ValueError("weights are corrupt")

    entry = ModelEntry.model_validate({"Plain": {"model_id": "org/model"}})
    app = create_app(RuntimeSettings(), entry, RuntimeDeps(load_engine=slow_failing_loader, on_fatal=fatal.append))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "loading" in ready.json()["error"]["message"]
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_not_ready"
        assert client.get("/v1/models").json()["data"][0]["id"] == "org/model"
        release.set()
        for _ in range(100):
            if fatal:
                break
            threading.Event().wait(0.05)
        assert fatal == ["weights are corrupt"]
        failed = client.get("/ready")
        assert failed.status_code == 503 and "weights are corrupt" in failed.json()["error"]["message"]


@pytest.mark.integration
def test_failed_load_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    rt = launch_runtime({"Plain": {"model_id": str(tmp_path / "missing-model")}})
    try:
        code = rt.proc.wait(timeout=120)
        logs = rt.logs()
    finally:
        rt.stop()
    assert code != 0
    reports = [r for r in map(decode_failure, logs.splitlines()) if r is not None]
    assert len(reports) == 1 and reports[0].stage == "load" and "missing-model" in reports[0].reason


@pytest.mark.integration
def test_invalid_entry_exits_with_usage_error() -> None:
    rt = launch_runtime({"DiffusionPlain": {"model_id": "x"}})
    code = rt.proc.wait(timeout=60)
    logs = rt.logs()
    rt.stop()
    assert code == 2
    assert "DiffusionPlain" in logs and "Plain" in logs


@pytest.mark.integration
def test_sigterm_lets_inflight_request_finish_and_exits_zero(tiny_llama_dir: Path) -> None:
    rt = launch_runtime({"Plain": {"model_id": str(tiny_llama_dir)}})
    try:
        rt.wait_ready()
        result: dict[str, httpx.Response] = {}

        def call() -> None:
            result["r"] = httpx.post(rt.url + "/v1/completions", timeout=60,
                                     json={"prompt": "Hi", "max_tokens": 200, "ignore_eos": True, "temperature": 0})

        worker = threading.Thread(target=call)
        worker.start()
        for _ in range(200):  # wait until the request is being generated
            if "modelplex_runtime_running_requests 1.0" in httpx.get(rt.url + "/metrics").text:
                break
            threading.Event().wait(0.02)
        code = rt.terminate(timeout=60)
        worker.join(60)
        assert code == 0
        assert result["r"].status_code == 200
        assert result["r"].json()["usage"]["completion_tokens"] == 200
    finally:
        rt.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the simulated death
def test_health_turns_503_when_the_engine_thread_is_wedged_or_dead(tiny_llama_dir: Path) -> None:
    import time

    from modelplex_runtime.engine.loader import load_engine

    gate = threading.Event()
    loaded: list[Engine] = []

    def loader(entry: ModelEntry, options: EngineOptions) -> Engine:
        engine = load_engine(entry, options)
        loaded.append(engine)
        return engine

    entry = ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}})
    settings = RuntimeSettings(device="cpu", engine_stall_seconds=0.5)
    with TestClient(create_app(settings, entry, RuntimeDeps(load_engine=loader))) as client:
        for _ in range(600):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.1)
        batcher = loaded[0]._batcher  # type: ignore[attr-defined]
        model = batcher.core.model

        def stuck(**kw: object) -> object:
            gate.wait(30)  # a forward that never returns, as a hung kernel or a deadlock would
            return model(**kw)

        def health_once(status: int) -> Any:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and client.get("/health").status_code != status:
                time.sleep(0.1)
            answer = client.get("/health")
            assert answer.status_code == status
            return answer.json()

        batcher.core.model = stuck
        assert client.get("/health").status_code == 200
        loaded[0].generate([1, 2, 3], SamplingParams(max_tokens=2), lambda ev: None)
        assert "no progress" in health_once(503)["error"]["message"]
        batcher.core.model = model
        gate.set()
        health_once(200)  # it recovered: progress again

        def die() -> None:
            raise RuntimeError("engine bug")

        batcher._gather_arrivals = die
        loaded[0].generate([1, 2, 3], SamplingParams(max_tokens=2), lambda ev: None)
        assert "died" in health_once(503)["error"]["message"]
