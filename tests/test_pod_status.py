"""Why a model's pods cannot become ready (modelplex_spec.pod_status): shared by the router's Kubernetes
backend and the operator's status."""

from __future__ import annotations

from typing import Any

from modelplex_spec.engines import VLLM
from modelplex_spec.pod_status import pod_problem, termination_reason

BACK_OFF = {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}

# What the kubelet keeps of a vLLM container that wrote no termination message (FallbackToLogsOnError:
# the end of its log), from vLLM 0.32's own output, shortened.
VLLM_LOG_TAIL = """\
(APIServer pid=11898) INFO 12-01 11:13:26 [api_utils.py:286] non-default args: {'port': 8000, 'model': '/models/bad'}
Traceback (most recent call last):
  File "/v/lib/python3.11/site-packages/transformers/configuration_utils.py", line 886, in _get_config_dict
    raise OSError(f"It looks like the config file at '{resolved_config_file}' is not a valid JSON file.")
OSError: It looks like the config file at '/models/bad/config.json' is not a valid JSON file.
INFO:     Finished server process [11898]
"""


def _crashing(terminated: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"state": {"waiting": BACK_OFF}, "lastState": {"terminated": terminated}}]}}]


def test_pod_problem_names_what_blocks_the_pods() -> None:
    pods = [{"metadata": {"name": "demo-tiny-abc"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}}]}}]
    assert pod_problem(pods) == "pod demo-tiny-abc: ImagePullBackOff: pull access denied"
    assert pod_problem([{"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}]) is None
    # A crash loop: the runtime's termination message (why it exited) beats the kubelet's back-off text.
    crashing = _crashing({"reason": "Error", "exitCode": 1, "message": "OSError: config.json is not valid JSON"})
    assert pod_problem(crashing) == "pod p: CrashLoopBackOff: OSError: config.json is not valid JSON"
    # No termination message at all: the kubelet's words.
    assert pod_problem(_crashing({"reason": "Error", "exitCode": 1})) == (
        "pod p: CrashLoopBackOff: back-off 20s restarting failed container")


def test_a_vllm_pods_log_tail_is_read_for_vllms_own_reason() -> None:
    crashing = _crashing({"reason": "Error", "exitCode": 1, "message": VLLM_LOG_TAIL})
    cause = "OSError: It looks like the config file at '/models/bad/config.json' is not a valid JSON file."
    assert pod_problem(crashing, VLLM) == f"pod p: CrashLoopBackOff: {cause}"
    # Read as the transformers runtime's output it still finds the exception line, not the shutdown chatter.
    assert pod_problem(crashing) == f"pod p: CrashLoopBackOff: {cause}"


def test_a_killed_container_says_how_it_ended() -> None:
    assert termination_reason({"reason": "OOMKilled", "exitCode": 137}) == "OOMKilled"
    tail = '{"level": "INFO", "message": "loading weights of org/big"}\n'
    assert termination_reason({"reason": "OOMKilled", "exitCode": 137, "message": tail}) == (
        "OOMKilled: loading weights of org/big")
    killed = "(APIServer pid=7) WARNING 12-01 11:48:03 [core_client.py:817] MPClient: engine core exited unexpectedly\n"
    assert termination_reason({"reason": "Error", "message": killed}, VLLM) == (
        "its engine core process ended unexpectedly (killed, or out of memory?)")
    assert termination_reason({}) == ""
