"""Unit tests for reading why a runtime ended (modelplex_spec.failure_reason, modelplex_spec.failure)."""

from __future__ import annotations

import json

import pytest

from modelplex_spec.engines import VLLM
from modelplex_spec.failure import decode_failure, encode_failure
from modelplex_spec.failure_reason import RuntimeOutput, describe_exit

SHUTDOWN = [
    json.dumps({"level": "INFO", "name": "uvicorn.error", "message": "Shutting down"}),
    json.dumps({"level": "INFO", "name": "uvicorn.error", "message": "Application shutdown complete."}),
    json.dumps({"level": "INFO", "name": "uvicorn.error", "message": "Finished server process [17451]"}),
]


def test_a_report_round_trips_as_one_line() -> None:
    line = encode_failure("load", "OSError: bad\n  config.json")
    assert "\n" not in line
    report = decode_failure("prefix noise " + line)
    assert report is not None and (report.stage, report.reason) == ("load", "OSError: bad config.json")
    assert decode_failure("modelplex-runtime-failure {not json") is None
    assert decode_failure('modelplex-runtime-failure {"stage": "load"}') is None
    with pytest.raises(ValueError, match="unknown failure stage"):
        encode_failure("later", "x")


def test_the_report_wins_over_the_shutdown_chatter_that_follows_it() -> None:
    out = RuntimeOutput()
    for line in [json.dumps({"level": "INFO", "message": "loading model"}),
                 encode_failure("load", "OSError: config.json is not a valid JSON file"), *SHUTDOWN]:
        out.feed(line)
    assert out.reason() == "OSError: config.json is not a valid JSON file"
    assert describe_exit(1, out.reason()) == "the runtime exited with code 1: OSError: config.json is not a valid JSON file"


def test_without_a_report_the_last_exception_line_is_the_reason() -> None:
    out = RuntimeOutput()
    for line in ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", *SHUTDOWN]:
        out.feed(line)
    assert out.reason() == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_an_error_log_record_with_its_exception_counts_as_the_reason() -> None:
    out = RuntimeOutput()
    out.feed(json.dumps({"level": "ERROR", "message": "engine died", "exc_info": "Traceback...\nRuntimeError: boom"}))
    out.feed(SHUTDOWN[-1])
    assert out.reason() == "engine died: RuntimeError: boom"


def test_the_engines_reader_plugs_in() -> None:
    out = RuntimeOutput(VLLM.output_reader())
    out.feed("(Worker pid=7) ERROR 12-01 11:26:16 [multiproc_executor.py:1063] ValueError: head size 16 is not supported")
    out.feed("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    out.feed("INFO:     Finished server process [5]")
    assert out.reason() == "ValueError: head size 16 is not supported"
    assert describe_exit(1, out.reason(), VLLM.title) == "vLLM exited with code 1: ValueError: head size 16 is not supported"
    # Without a line of vLLM's own about it, the generic reading still gives the last word.
    bare = RuntimeOutput(VLLM.output_reader())
    bare.feed("Killed")
    assert bare.reason() == "Killed"


def test_plain_last_line_without_chatter_and_nothing_at_all() -> None:
    out = RuntimeOutput()
    assert out.reason() is None
    out.feed("simulated failure")
    out.feed(SHUTDOWN[0])
    assert out.reason() == "simulated failure"


def test_describe_exit_names_signals() -> None:
    assert describe_exit(-9, None) == "the runtime was killed by signal 9 (SIGKILL: out of memory, or killed by someone)"
    assert describe_exit(-15, "x") == "the runtime was killed by signal 15 (SIGTERM): x"
    assert describe_exit(2, None) == "the runtime exited with code 2"


def test_an_unhealthy_answer_carries_the_runtimes_reason() -> None:
    import httpx

    from modelplex_router.health import _reason

    body = {"error": {"message": "model 'm' is unhealthy: the engine thread 'engine' has died", "code": "x"}}
    assert _reason(httpx.Response(503, json=body)) == ": model 'm' is unhealthy: the engine thread 'engine' has died"
    assert _reason(httpx.Response(503, text="not json")) == ""
