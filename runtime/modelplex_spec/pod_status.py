"""Why a model's pods cannot become ready, read from their status (pure; the router's Kubernetes backend
and the operator's status both use it, so a crash-looping model is explained the same way in both).

A crashed container's ``lastState.terminated.message`` is its termination message: what our runtime
wrote to the termination message file (``modelplex_spec.failure``), or, where nothing was written (vLLM,
a runtime killed before it could say why), the end of the container's log, which the operator asks for
with ``terminationMessagePolicy: FallbackToLogsOnError``. Either is read like a local runtime's output
(``failure_reason``, with the engine's own reader), so a vLLM pod's reason is its exception, not the
kubelet's "back-off 10s restarting failed container".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modelplex_spec.engines import TRANSFORMERS, Engine
from modelplex_spec.failure_reason import RuntimeOutput

# Container states that will not fix themselves: a load fails with the reason instead of waiting.
FATAL_WAITING = frozenset({
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
})
# What the kubelet puts in ``terminated.reason`` for any non-zero exit: says nothing the message does not.
_PLAIN_EXIT = ("Error", "Completed")


def termination_reason(terminated: Mapping[str, Any], engine: Engine = TRANSFORMERS) -> str:
    """One line from a container's ``terminated`` state: the reason in its message (``OOMKilled: ...``
    first when the kernel killed it); empty when it says nothing."""
    output = RuntimeOutput(engine.output_reader(), keep=80)
    for line in str(terminated.get("message") or "").splitlines():
        output.feed(line)
    why = output.reason() or ""
    kind = str(terminated.get("reason") or "")
    if kind and kind not in _PLAIN_EXIT:
        return f"{kind}: {why}" if why else kind
    return why


def pod_problem(pods: Iterable[Mapping[str, Any]], engine: Engine = TRANSFORMERS) -> str | None:
    """Why the model's pods cannot become ready without help, in one line (None when they may)."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FATAL_WAITING:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                # Why it stopped beats the kubelet's "back-off 10s restarting failed container".
                detail = termination_reason(last, engine) or waiting.get("message") or last.get("reason") or ""
                name = (pod.get("metadata") or {}).get("name", "?")
                return f"pod {name}: {waiting['reason']}" + (f": {detail}" if detail else "")
    return None
