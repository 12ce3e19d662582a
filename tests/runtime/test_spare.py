"""Spare runtimes: started with ``--spare``, warmed up, then handed their model as one line on stdin."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest

from helpers.ports import free_port
from modelplex_runtime.settings import RuntimeSettings
from modelplex_runtime.spare import READY_LINE, AssignmentError, apply_assignment, encode_assignment
from modelplex_spec.failure import decode_failure


def test_assignment_round_trip() -> None:
    base = RuntimeSettings(spare=True, host="127.0.0.1", port=9000, max_batch_size=4)
    line = encode_assignment({"Plain": {"model_id": "/models/x"}}, "x", 4321)
    assigned = apply_assignment(base, line)
    assert assigned.spare is False
    assert assigned.port == 4321
    assert assigned.served_model_name == "x"
    assert assigned.max_batch_size == 4  # the spare's own flags carry over
    assert assigned.load_entry().selector.model_id == "/models/x"


def test_assignment_without_port_keeps_the_spares_port() -> None:
    assigned = apply_assignment(RuntimeSettings(port=9000), b'{"model": {"Plain": {"model_id": "m"}}}\n')
    assert assigned.port == 9000
    assert assigned.served_model_name is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "not JSON"),
        (b'{"served_model_name": "x"}\n', "needs a 'model' object"),
        (b'{"model": {"Plain": {"model_id": "m"}}, "port": 70000}\n', "'port' must be an integer"),
        (b'{"model": {"Plain": {"model_id": "m"}}, "port": true}\n', "'port' must be an integer"),
        (b'{"model": {"Plain": {"model_id": "m"}}, "served_model_name": ""}\n', "non-empty string"),
    ],
)
def test_bad_assignments_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(AssignmentError, match=message):
        apply_assignment(RuntimeSettings(), line)


class Spare:
    """A ``python -m modelplex_runtime --spare`` process with its stdin open and its log in a file."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelplex_runtime", "--spare", "--host", "127.0.0.1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_warm(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "spare runtime ready" not in self.logs():
            assert self.proc.poll() is None, (
                f"the spare exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"the spare did not warm up:\n{self.logs()[-3000:]}"
            time.sleep(0.1)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == READY_LINE.encode()  # what the parent waits for

    def hand(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.mark.integration
def test_a_spare_serves_the_model_it_is_handed(tiny_llama_dir: Path) -> None:
    spare = Spare()
    try:
        spare.wait_warm()
        logs = spare.logs()
        assert "prewarm_seconds" in logs
        assert "rehearsal failed" not in logs
        port = free_port()
        spare.hand(encode_assignment({"Plain": {"model_id": str(tiny_llama_dir)}}, "tiny", port))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert spare.proc.poll() is None, spare.logs()[-3000:]
            try:
                ready = httpx.get(url + "/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, spare.logs()[-3000:]
            time.sleep(0.05)
        assert ready.json()["model"] == "tiny"
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
        )
        assert reply.model == "tiny"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        assert [m.id for m in client.models.list().data] == ["tiny"]
    finally:
        spare.stop()
    assert spare.proc.returncode == 0


@pytest.mark.integration
def test_a_spare_exits_cleanly_on_eof_and_explains_a_bad_model() -> None:
    idle, bad = Spare(), Spare()
    try:
        idle.hand(b"")  # the parent went away before needing it
        bad.hand(encode_assignment({"Plain": {}}, "broken", free_port()))
        assert idle.proc.wait(120) == 0
        assert bad.proc.wait(120) == 2
        report = decode_failure(bad.logs().strip().splitlines()[-1])
        assert report is not None and report.stage == "config"
        assert report.reason.startswith("invalid configuration:") and "model_id" in report.reason
        assert (
            json.dumps({"message": "stdin closed before a model was assigned; exiting"})[1:-1] in idle.logs()
        )
    finally:
        idle.stop()
        bad.stop()
