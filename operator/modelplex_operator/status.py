"""Model states and the MultiModel status, derived from observed Deployments (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from modelplex_operator.naming import ANNOTATION_LAST_SCALING
from modelplex_spec.engines import TRANSFORMERS, Engine
from modelplex_spec.pod_status import pod_problem

State = Literal["loaded", "unloaded", "loading", "failed"]


@dataclass(frozen=True)
class ModelObservation:
    api_id: str
    label: str
    name: str
    deployment: dict[str, Any] | None
    pods: tuple[dict[str, Any], ...] = ()
    engine: Engine = TRANSFORMERS
    """The model's engine: how its crashed containers' termination messages are read."""


def model_state(
    deployment: dict[str, Any] | None, pods: tuple[dict[str, Any], ...] = (), engine: Engine = TRANSFORMERS
) -> tuple[State, str]:
    """The state of one model from its Deployment (None: not created yet) and its pods (``engine``: the
    model's, which reads why its containers stopped)."""
    if deployment is None:
        return "loading", "Deployment not created yet"
    spec_replicas = int(deployment.get("spec", {}).get("replicas", 1) or 0)
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            return "failed", cond.get("message") or cond.get("reason") or "rollout stalled"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return "failed", cond.get("message") or cond.get("reason") or "replicas cannot be created"
    if spec_replicas == 0:
        return "unloaded", "scaled to zero"
    if ready >= 1:
        return "loaded", f"{ready}/{spec_replicas} replicas ready"
    problem = pod_problem(pods, engine)
    if problem:
        return "failed", problem
    return "loading", f"0/{spec_replicas} replicas ready"


def ready_replicas(deployment: dict[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def model_status(obs: ModelObservation, previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    state, message = model_state(obs.deployment, obs.pods, obs.engine)
    dep = obs.deployment or {}
    changed = previous is None or previous.get("state") != state
    return {
        "label": obs.label,
        "state": state,
        "replicas": int(dep.get("spec", {}).get("replicas", 0) or 0),
        "readyReplicas": int((dep.get("status") or {}).get("readyReplicas") or 0),
        "deployment": obs.name,
        "service": obs.name,
        "message": message,
        "lastTransitionTime": now if changed or not previous else previous.get("lastTransitionTime", now),
        **({"lastScaling": scaling} if (scaling := last_scaling(dep)) else {}),
    }


def last_scaling(deployment: dict[str, Any]) -> str | None:
    """The router's record of its last scaling decision on the Deployment (time, counts, reason)."""
    value = ((deployment.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_SCALING)
    return str(value) if value else None


def ready_condition(
    models: dict[str, dict[str, Any]], problems: list[str], previous: list[dict[str, Any]], now: str,
    generation: int | None, problem_reason: str = "InvalidSpec",
) -> dict[str, Any]:
    if problems:
        status, reason, message = "False", problem_reason, "; ".join(problems)
    else:
        failed = [mid for mid, m in models.items() if m["state"] == "failed"]
        if failed:
            status, reason, message = "False", "ModelFailed", "failed: " + ", ".join(sorted(failed))
        else:
            status, reason, message = "True", "Reconciled", "every model has its Deployment and Service"
    old = next((c for c in previous if c.get("type") == "Ready"), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    cond: dict[str, Any] = {"type": "Ready", "status": status, "reason": reason, "message": message,
                            "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def build_status(
    observations: list[ModelObservation],
    default_model: str,
    previous: dict[str, Any],
    now: str,
    generation: int | None,
    problems: list[str] | None = None,
    problem_reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """The full status; models that disappeared are set to None so a merge patch removes them."""
    prev_models: dict[str, Any] = previous.get("models") or {}
    models = {o.api_id: model_status(o, prev_models.get(o.api_id), now) for o in observations}
    status: dict[str, Any] = {
        "models": {**{mid: None for mid in prev_models if mid not in models}, **models},
        "modelCount": len(models),
        "loadedCount": sum(1 for m in models.values() if m["state"] == "loaded"),
        "defaultModel": default_model,
        "conditions": [ready_condition(models, problems or [], previous.get("conditions") or [], now, generation,
                                       problem_reason)],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def scalings(previous: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str]]:
    """(api id, decision) for every model whose last scaling decision is new (for Kubernetes Events)."""
    prev_models = previous.get("models") or {}
    return [
        (mid, m["lastScaling"])
        for mid, m in (current.get("models") or {}).items()
        if m is not None and m.get("lastScaling") and m["lastScaling"] != (prev_models.get(mid) or {}).get("lastScaling")
    ]


def transitions(previous: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(api id, old state, new state) for every model whose state changed (for Kubernetes Events)."""
    prev_models = previous.get("models") or {}
    out = []
    for mid, m in (current.get("models") or {}).items():
        if m is None:
            continue
        old = (prev_models.get(mid) or {}).get("state")
        if old != m["state"]:
            out.append((mid, old, m["state"]))
    return out
