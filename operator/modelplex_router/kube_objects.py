"""What the router reads from the cluster's objects: the operator's naming contract and pure readers of
MultiModels, Deployments and Pods (no API calls; ``kube_backend`` makes those).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from modelplex_spec import ModelEntry, ModelplexConfig
from modelplex_spec.config import parse_entries

# The operator's contract (modelplex_operator.naming; a test checks they agree).
GROUP = "modelplex.dev"
VERSION = "v1alpha1"
PLURAL = "multimodels"
LABEL_MULTIMODEL = f"{GROUP}/multimodel"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelplex-operator"
ANNOTATION_API_ID = f"{GROUP}/api-id"
ANNOTATION_LAST_USED = f"{GROUP}/last-used"
ANNOTATION_LAST_SCALING = f"{GROUP}/last-scaling"
RUNTIME_PORT = 8000
RUNTIME_PORT_NAME = "http"  # the runtime container's and the Service's port name


def deployment_selector(multimodel: str) -> str:
    """The label selector of the operator's Deployments (of one MultiModel when ``multimodel`` is set)."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    return f"{selector},{LABEL_MULTIMODEL}={multimodel}" if multimodel else selector


def api_id_of(dep: Mapping[str, Any], multimodel: str) -> str | None:
    """The model a Deployment runs, or None when it is not one of ours (filtered here too: the selector
    is the server's job, but a wrong match would scale somebody else's Deployment)."""
    meta = dep.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    if multimodel and labels.get(LABEL_MULTIMODEL) != multimodel:
        return None
    return (meta.get("annotations") or {}).get(ANNOTATION_API_ID) or None


def by_api_id(objects: Mapping[str, Mapping[str, Any]], multimodel: str) -> dict[str, str]:
    """API id -> Deployment name over Deployments by name (on a clash, the first name in order)."""
    found: dict[str, str] = {}
    for name in sorted(objects):
        api_id = api_id_of(objects[name], multimodel)
        if api_id is not None:
            found.setdefault(api_id, name)
    return found


def now_iso() -> str:
    # Milliseconds: idle timeouts can be short, and the readers allow only for the write throttle.
    return datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def config_from_multimodels(
    objects: list[Mapping[str, Any]], default_model_id: str | None = None
) -> tuple[ModelplexConfig, dict[str, str]]:
    """Every model of the given MultiModels as one config, and API id -> owning MultiModel name.

    API ids must be unique across the MultiModels one router serves; ConfigError lists clashes.
    """
    pairs: list[tuple[str, Any]] = []
    owners: list[str] = []
    first_default: str | None = None
    for obj in sorted(objects, key=lambda o: o["metadata"]["name"]):
        spec = obj.get("spec") or {}
        first_default = first_default or spec.get("defaultModelId")
        for label, entry in (spec.get("models") or {}).items():
            raw = {k: v for k, v in entry.items() if v is not None} if isinstance(entry, Mapping) else entry
            pairs.append((f"{obj['metadata']['name']}/{label}", raw))
            owners.append(obj["metadata"]["name"])
    config = parse_entries(pairs, default_model_id or first_default)
    return config, {m.entry.api_id: owner for m, owner in zip(config.models, owners, strict=True)}


def last_used_from(dep: Mapping[str, Any], write_interval: float) -> float | None:
    """The latest time any router replica may have used the model, from the last-used annotation.

    Writers record a use at most every ``write_interval`` seconds, so a use may have happened up to that
    long after the recorded time without being written: count it as that late, or a replica would unload
    a model that another one keeps serving at a steady rate.
    """
    value = ((dep.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_USED, "")
    written = parse_iso(value.split(" ")[0] if value else None)
    return None if written is None else written + write_interval


def load_target(entry: ModelEntry) -> tuple[int, int]:
    """(replicas a load starts, replicas when unloaded) for an entry; the autoscaler (the router holding
    the scaling lease, or KEDA / an HPA) takes a loaded model further."""
    scaling = entry.effective_scaling
    return scaling.floor, scaling.min_replicas


def deployment_problem(dep: Mapping[str, Any]) -> str | None:
    for cond in (dep.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            return f"deployment {dep['metadata']['name']}: {cond.get('message') or cond.get('reason')}"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"deployment {dep['metadata']['name']}: {cond.get('message') or cond.get('reason')}"
    return None


def stop_bound(dep: Mapping[str, Any], grace_seconds: float) -> float:
    """How long ``stop`` waits for a Deployment's pods to go: the pods' own termination grace (after which
    the kubelet kills them) or the router's, whichever is longer, plus time for the kubelet to report."""
    pod_spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    pod_grace = pod_spec.get("terminationGracePeriodSeconds")
    pod_grace = float(pod_grace) if isinstance(pod_grace, int | float) else 30.0  # Kubernetes' default
    return max(pod_grace, grace_seconds) + 15.0


def ready_replicas(dep: Mapping[str, Any]) -> int:
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def spec_replicas(dep: Mapping[str, Any]) -> int:
    return int((dep.get("spec") or {}).get("replicas", 1) or 0)
