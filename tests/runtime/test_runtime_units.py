"""Pure pieces of the runtime: stop strings, request decisions, SSE, images, device maps, settings."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modelplex_runtime import protocol
from modelplex_runtime.api.chat_request import ChatCompletionRequest
from modelplex_runtime.api.completions import CompletionRequest, prompts_of
from modelplex_runtime.device_layers import build_device_map
from modelplex_runtime.errors import APIError, format_validation_errors
from modelplex_runtime.images import decode_data_url, fetch_image_bytes, load_image
from modelplex_runtime.settings import RuntimeSettings
from modelplex_runtime.sse import DONE, sse_event
from modelplex_runtime.textstream import TextStream


def _chars(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def test_text_stream_holds_back_possible_stop_prefix() -> None:
    ts = TextStream(_chars, stops=["END"])
    ids: list[int] = []
    out = []
    for ch in "abcEN":
        ids.append(ord(ch))
        out.append(ts.update(ids))
    assert "".join(out) == "abc"  # "EN" might start "END"
    ids.append(ord("D"))
    assert ts.update(ids) == "" and ts.stopped and ts.text == "abc"


def test_text_stream_releases_prefix_that_did_not_become_a_stop() -> None:
    ts = TextStream(_chars, stops=["END"])
    ids = [ord(c) for c in "abEN"]
    assert ts.update(ids) == "ab"
    ids += [ord("x")]
    assert ts.update(ids) == "ENx" and not ts.stopped
    assert ts.flush(ids) == ""


def test_text_stream_waits_for_complete_characters() -> None:
    pieces = {1: "h", 2: "\ufffd", 3: "é"}

    def decode(ids: list[int]) -> str:
        text = "".join(pieces[i] for i in ids)
        return text.replace("\ufffdé", "é")

    ts = TextStream(decode)
    assert ts.update([1]) == "h"
    assert ts.update([1, 2]) == ""
    assert ts.update([1, 2, 3]) == "é"


def test_text_stream_stop_spanning_earlier_text() -> None:
    ts = TextStream(_chars, stops=["xy"])
    assert ts.update([ord("a"), ord("x")]) == "a"
    assert ts.update([ord("a"), ord("x"), ord("y"), ord("z")]) == "" and ts.stopped


def test_check_context_names_both_lengths() -> None:
    assert protocol.check_context(10, None, 100) == 90
    assert protocol.check_context(10, 5, 100) == 5
    with pytest.raises(APIError) as exc:
        protocol.check_context(100, None, 100)
    assert exc.value.status == 400 and "100" in exc.value.message
    with pytest.raises(APIError) as exc:
        protocol.check_context(10, 95, 100)
    assert "10" in exc.value.message and "95" in exc.value.message and "100" in exc.value.message


def test_sampling_params_from_request() -> None:
    req = CompletionRequest(prompt="x", temperature=0.5, top_p=0.9, top_k=-1, seed=7, stop="\n")
    p = protocol.sampling_params(req, 12, 100)
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.seed, p.stop) == (12, 0.5, 0.9, 0, 7, ("\n",))
    assert not p.greedy and not p.processed
    assert protocol.sampling_params(CompletionRequest(prompt="x", temperature=0), 1, 100).greedy
    three = protocol.sampling_params(CompletionRequest(prompt="x", n=3, logit_bias={"5": 2.5}), 4, 100)
    assert three.n == 3 and three.logit_bias == ((5, 2.5),) and three.processed
    with pytest.raises(APIError, match="vocabulary"):
        protocol.sampling_params(CompletionRequest(prompt="x", logit_bias={"500": 1}), 4, 100)
    with pytest.raises(APIError, match="min_tokens"):
        protocol.sampling_params(CompletionRequest(prompt="x", min_tokens=9), 4, 100)


def test_request_models_are_strict_and_name_wrong_types() -> None:
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi", "name": "bob"}], "user": "u1", "metadata": {}}
    )
    assert req.messages[0].content == "hi"
    with pytest.raises(ValidationError) as exc:
        ChatCompletionRequest.model_validate({"messages": [], "temperature": "hot"})
    message, param = format_validation_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.value.errors()])
    assert "messages" in message and "temperature" in message and param in ("messages", "temperature")
    for bad in ({"max_tokens": True}, {"stream": "yes"}, {"stop": [""]}, {"seed": 2**63}, {"n": 1.0},
                {"some_future_field": 1}, {"logit_bias": {"x": 1}}, {"top_logprobs": 21}):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **bad})
    with pytest.raises(ValidationError, match="tool_call_id"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "tool", "content": "x"}]})


def test_model_name_resolution() -> None:
    for ok in (None, "", "default", "served", "org/pipeline"):
        protocol.resolve_model_name(ok, "served", "org/pipeline")
    with pytest.raises(APIError) as exc:
        protocol.resolve_model_name("other", "served", "org/pipeline")
    assert exc.value.status == 404 and "'served'" in exc.value.message


def test_completion_prompt_shapes() -> None:
    assert prompts_of("a") == ["a"]
    assert prompts_of(["a", "b"]) == ["a", "b"]
    assert prompts_of([1, 2]) == [[1, 2]]
    assert prompts_of([[1, 2], [3]]) == [[1, 2], [3]]
    with pytest.raises(APIError):
        prompts_of([])


def test_sse_framing() -> None:
    assert sse_event({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
    assert DONE == b"data: [DONE]\n\n"


def _png_data_url() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_image_data_urls() -> None:
    img = load_image(decode_data_url(_png_data_url()))
    assert img.size == (4, 3)
    with pytest.raises(APIError, match="base64"):
        decode_data_url("data:image/png;base64,@@@")
    with pytest.raises(APIError, match="image/"):
        decode_data_url("data:text/plain;base64,aGk=")
    with pytest.raises(APIError, match="--allow-remote-images"):
        fetch_image_bytes("https://example.com/cat.png", allow_remote=False)
    with pytest.raises(APIError, match="decoded"):
        load_image(b"not an image")


def test_device_map_from_num_device_layers() -> None:
    dm = build_device_map(["0:2", "1:1"], num_layers=4, device_count=2)
    assert [dm[f"model.layers.{i}"] for i in range(4)] == [0, 0, 1, "cpu"]
    assert dm["model.embed_tokens"] == 0 and dm["lm_head"] == "cpu"
    with pytest.raises(ValueError, match="device 3"):
        build_device_map(["3:1"], num_layers=2, device_count=2)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELPLEX_RUNTIME_PORT", "9123")
    monkeypatch.setenv("MODELPLEX_RUNTIME_MODEL_JSON", json.dumps({"Plain": {"model_id": "org/m"}, "alias": "m"}))
    s = RuntimeSettings()
    entry = s.load_entry()
    assert s.port == 9123 and s.served_name(entry) == "m"
    monkeypatch.setenv("MODELPLEX_RUNTIME_SERVED_MODEL_NAME", "other")
    assert RuntimeSettings().served_name(entry) == "other"
    path = tmp_path / "entry.json"
    path.write_text(json.dumps({"Embedding": {"model_id": "org/e"}}))
    with pytest.raises(ValueError, match="either"):
        RuntimeSettings(model_file=str(path)).load_entry()  # env model_json is still set
    monkeypatch.delenv("MODELPLEX_RUNTIME_MODEL_JSON")
    assert RuntimeSettings(model_file=str(path)).load_entry().kind.value == "Embedding"
    with pytest.raises(ValueError, match="no model given"):
        RuntimeSettings().load_entry()


async def test_event_pump_delivers_in_order_from_another_thread() -> None:
    import asyncio
    import threading

    from modelplex_runtime.pump import EventPump

    pump = EventPump(asyncio.get_running_loop())
    queues: list[asyncio.Queue[int]] = [asyncio.Queue(), asyncio.Queue()]

    def produce() -> None:
        for i in range(100):
            pump.post(queues[i % 2], i)

    threading.Thread(target=produce).start()
    got = [[await queues[q].get() for _ in range(50)] for q in (0, 1)]
    assert got == [list(range(0, 100, 2)), list(range(1, 100, 2))]


class _ManualLoop:
    """Enough of an event loop for EventPump: callbacks run when the test says, timers are listed."""

    def __init__(self) -> None:
        self.soon: list[tuple[Any, tuple[Any, ...]]] = []
        self.timers: list[tuple[float, Any]] = []

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        self.soon.append((fn, args))

    def call_later(self, delay: float, fn: Any) -> None:
        self.timers.append((delay, fn))

    def run_soon(self) -> None:
        while self.soon:
            fn, args = self.soon.pop(0)
            fn(*args)


def test_event_pump_interval_holds_tokens_until_it_ends_and_urgent_items_go_at_once() -> None:
    import asyncio

    from modelplex_runtime.pump import EventPump

    now = [100.0]
    loop = _ManualLoop()
    pump = EventPump(loop, interval=0.02, clock=lambda: now[0])  # type: ignore[arg-type]
    queue: asyncio.Queue[str] = asyncio.Queue()

    def drained() -> list[str]:
        return [queue.get_nowait() for _ in range(queue.qsize())]

    pump.post(queue, "first", urgent=True)  # a first token: delivered on the next loop turn
    loop.run_soon()
    assert drained() == ["first"] and loop.timers == []

    now[0] += 0.005
    pump.post(queue, "a")
    pump.post(queue, "b")
    loop.run_soon()
    assert drained() == []  # within the interval: one timer for the rest of it, for both tokens
    assert len(loop.timers) == 1 and abs(loop.timers[0][0] - 0.015) < 1e-9

    now[0] += 0.015
    loop.timers.pop()[1]()
    assert drained() == ["a", "b"]

    now[0] += 0.001
    pump.post(queue, "c")
    loop.run_soon()
    pump.post(queue, "done", urgent=True)  # a finish overtakes the pending timer and takes "c" along
    loop.run_soon()
    assert drained() == ["c", "done"]
    loop.timers.pop()[1]()  # the overtaken timer finds nothing left
    assert drained() == []

    now[0] += 1.0
    pump.post(queue, "late")  # the interval has long passed: no timer
    loop.run_soon()
    assert drained() == ["late"] and loop.timers == []


def test_event_pump_without_interval_delivers_every_item_on_the_next_turn() -> None:
    import asyncio

    from modelplex_runtime.pump import EventPump

    loop = _ManualLoop()
    pump = EventPump(loop, interval=0.0, clock=lambda: 5.0)  # type: ignore[arg-type]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(3):
        pump.post(queue, i)
        loop.run_soon()
        assert queue.get_nowait() == i
    assert loop.timers == []


def test_a_tiny_top_p_still_keeps_the_top_token() -> None:
    # 5e-324 rounds to 0.0 in float32; schemathesis found that it dropped every token (NaN probabilities).
    import torch

    from modelplex_runtime.engine.sampling import make_generator, sample_row
    from modelplex_runtime.engine_api import SamplingParams

    params = SamplingParams(max_tokens=1, top_p=5e-324, seed=1)
    logits = torch.tensor([0.1, 3.0, 0.2, -1.0])
    assert sample_row(logits, params, make_generator(params)) == 1


def test_an_empty_prompt_is_a_400() -> None:
    with pytest.raises(APIError) as info:
        protocol.check_context(0, None, 128)
    assert info.value.status == 400 and "empty" in info.value.message


@pytest.mark.parametrize(("text", "finish"), [("héllo \"quoted\"\n\\", None), ("", "stop"), ("\u2028 ☃", "length")])
def test_chunk_frames_encode_like_the_whole_payload(text: str, finish: str | None) -> None:
    from modelplex_runtime.sse import ChunkFrames, sse_event

    def payload(t: str, f: str | None) -> dict[str, object]:
        return {"id": "cmpl-1", "object": "text_completion", "model": "m\"odel",
                "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": f}], "usage": None}

    frames = ChunkFrames(payload(ChunkFrames.TEXT, ChunkFrames.FINISH))  # type: ignore[arg-type]
    assert frames.frame(text, finish) == sse_event(payload(text, finish))


def test_text_stream_decodes_incrementally_and_matches_a_full_decode(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tokenizer("Models are loaded on demand, and unloaded when idle: 0 1 2 3. Héllo wörld ☃!")["input_ids"] * 20
    longest = 0

    def decode(window: list[int]) -> str:
        nonlocal longest
        longest = max(longest, len(window))
        return tokenizer.decode(window, skip_special_tokens=True)

    ts = TextStream(decode)
    streamed = "".join(ts.update(ids[: i + 1]) for i in range(len(ids))) + ts.flush(ids)
    assert streamed == tokenizer.decode(ids, skip_special_tokens=True)
    assert longest <= 8  # a few tokens per step, however long the output
