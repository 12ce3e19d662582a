"""Report why this runtime cannot go on, in the form its supervisor reads (``modelplex_spec.failure``)."""

from __future__ import annotations

import contextlib
import os
import sys
from types import TracebackType

from modelplex_spec.failure import encode_failure, one_line

# Where Kubernetes looks for a container's termination message (terminationMessagePath's default).
TERMINATION_LOG = "/dev/termination-log"


def report_failure(stage: str, reason: str, termination_log: str | None = None) -> None:
    """One marked line on stderr, and the reason in the termination message file when there is one."""
    print(encode_failure(stage, reason), file=sys.stderr, flush=True)
    termination_log = TERMINATION_LOG if termination_log is None else termination_log
    if termination_log and os.path.exists(termination_log):
        with contextlib.suppress(OSError), open(termination_log, "w", encoding="utf-8") as f:
            f.write(one_line(reason)[:4000])  # the kubelet keeps at most 4096 bytes


def report_on_crash() -> None:
    """An exception that ends the process (uncaught in the main thread) is reported as a ``serve``
    failure, after Python's usual traceback."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(kind, exc, tb)
        if not issubclass(kind, KeyboardInterrupt | SystemExit):
            report_failure("serve", f"{kind.__name__}: {exc}")

    sys.excepthook = hook
