"""``modelplex chat`` fed through a pipe against a fake fake_router: streaming output, history, commands, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelplex.commands.chat import Conversation, Line, parse_line
from router.harness import start_router
from sdk.fake_router import SLOW, FakeRouter


def chat(router_url: str, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelplex", "chat", "--url", router_url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_parse_line() -> None:
    assert parse_line("  hello  \n") == Line("say", "hello")
    assert parse_line("\n") == Line("empty")
    assert parse_line("/exit") == Line("exit")
    assert parse_line("/QUIT") == Line("exit")
    assert parse_line("/reset") == Line("reset")
    assert parse_line("/model  org/m-1 ") == Line("model", "org/m-1")
    assert parse_line("/model") == Line("model", "")
    assert parse_line("/frobnicate now") == Line("unknown", "/frobnicate")


def test_conversation_request_leaves_out_what_is_not_set() -> None:
    conversation = Conversation(model=None)
    assert conversation.request("hi", None, None) == {"messages": [user("hi")]}
    conversation = Conversation(model="m", system="be brief")
    conversation.record("hi", "hello")
    assert conversation.request("again", 16, 0.0) == {
        "messages": [
            {"role": "system", "content": "be brief"},
            user("hi"),
            assistant("hello"),
            user("again"),
        ],
        "model": "m",
        "max_tokens": 16,
        "temperature": 0.0,
    }


def test_two_turns_stream_and_keep_the_history(fake_router: FakeRouter) -> None:
    done = chat(fake_router.url, "hello there\nsecond one\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo hello there (turn 1)\necho second one (turn 2)\n"
    assert "Traceback" not in done.stderr
    first, second = fake_router.bodies("/v1/chat/completions")
    # No --model: the request names none, so the server's default model answers.
    assert first == {"messages": [user("hello there")], "stream": True}
    assert second["messages"] == [
        user("hello there"),
        assistant("echo hello there (turn 1)"),
        user("second one"),
    ]


def test_options_and_commands(fake_router: FakeRouter) -> None:
    stdin = "one\n/reset\ntwo\n/model other\nthree\n/model\n/exit\nnever sent\n"
    done = chat(
        fake_router.url,
        stdin,
        "--model",
        "tiny",
        "--system",
        "be brief",
        "--max-tokens",
        "8",
        "--temperature",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["echo one (turn 1)", "echo two (turn 1)", "echo three (turn 2)"]
    assert "model: other (unloaded)" in done.stderr
    bodies = fake_router.bodies("/v1/chat/completions")
    assert len(bodies) == 3
    assert bodies[0] == {
        "messages": [{"role": "system", "content": "be brief"}, user("one")],
        "model": "tiny",
        "max_tokens": 8,
        "temperature": 0.5,
        "stream": True,
    }
    # /reset dropped turn one but kept the system prompt; /model switched without forgetting.
    assert bodies[1]["messages"] == [{"role": "system", "content": "be brief"}, user("two")]
    assert bodies[2]["model"] == "other"
    assert bodies[2]["messages"][1:] == [user("two"), assistant("echo two (turn 1)"), user("three")]


def test_errors_are_reported_without_traceback_and_the_failed_turn_is_dropped(
    fake_router: FakeRouter,
) -> None:
    done = chat(fake_router.url, f"/model nope\n/model {SLOW}\nfirst\n/model tiny\nsecond\n")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: model 'nope' not found" in done.stderr
    assert "error: model slow is still loading (HTTP 503); try again in 7 s" in done.stderr
    assert done.stdout == "echo second (turn 1)\n"
    assert fake_router.bodies("/v1/chat/completions")[-1]["messages"] == [user("second")]


def test_unreachable_server() -> None:
    from helpers.ports import free_port

    done = chat(f"http://127.0.0.1:{free_port()}", "hello\n")
    assert done.returncode == 1
    assert "error: cannot connect to http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.integration
def test_against_the_real_router(tmp_path: Path) -> None:
    config = {"m": {"alias": "m", "Plain": {"model_id": "org/m"}}, "n": {"Plain": {"model_id": "org/n"}}}
    process = start_router(tmp_path / "router", config)
    try:
        done = chat(process.url, "hello\n/model org/n\nagain\n/model nope\n")
        assert done.returncode == 1, done.stderr
        # Each fake runtime streams "t0 ... t4"; the first message loads the default model on the way.
        assert [line.split() for line in done.stdout.splitlines()] == [["t0", "t1", "t2", "t3", "t4"]] * 2
        assert "model: org/n (unloaded)" in done.stderr
        assert "error: model 'nope' not found" in done.stderr
        assert process.statuses() == {"default": "", "m": "loaded", "org/n": "loaded"}
    finally:
        process.stop()
