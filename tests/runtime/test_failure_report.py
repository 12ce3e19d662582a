"""The runtime's failure report: one marked line on stderr, the termination message on Kubernetes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelplex_runtime.failure import report_failure, report_on_crash
from modelplex_spec.failure import decode_failure


def test_report_writes_the_line_and_the_termination_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    report_failure("load", "OSError: bad\nconfig", termination_log=str(log))
    report = decode_failure(capsys.readouterr().err.strip())
    assert report is not None and report.stage == "load" and report.reason == "OSError: bad config"
    assert log.read_text() == "OSError: bad config"
    # No termination message file (outside Kubernetes): only the line.
    report_failure("config", "x", termination_log=str(tmp_path / "absent"))
    assert not (tmp_path / "absent").exists()


def test_an_uncaught_exception_is_reported_as_a_serve_failure(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setattr("modelplex_runtime.failure.TERMINATION_LOG", "")
    report_on_crash()
    sys.excepthook(RuntimeError, RuntimeError("engine exploded"), None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert "engine exploded" in lines[0]  # Python's own report first
    report = decode_failure(lines[-1])
    assert report is not None and (report.stage, report.reason) == ("serve", "RuntimeError: engine exploded")
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert decode_failure(capsys.readouterr().err.strip().splitlines()[-1]) is None
