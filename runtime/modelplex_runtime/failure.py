"""Report why this runtime cannot go on, in the form its supervisor reads (``modelplex_spec.failure``)."""

from __future__ import annotations

import contextlib
import os
import sys

from modelplex_spec.failure import encode_failure, one_line

# Where Kubernetes looks for a container's termination message (terminationMessagePath's default).
TERMINATION_LOG = "/dev/termination-log"


def report_failure(stage: str, reason: str, termination_log: str = TERMINATION_LOG) -> None:
    """One marked line on stderr, and the reason in the termination message file when there is one."""
    print(encode_failure(stage, reason), file=sys.stderr, flush=True)
    if termination_log and os.path.exists(termination_log):
        with contextlib.suppress(OSError), open(termination_log, "w", encoding="utf-8") as f:
            f.write(one_line(reason)[:4000])  # the kubelet keeps at most 4096 bytes
