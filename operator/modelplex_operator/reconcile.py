"""One level-based pass over a MultiModel: parse -> observe -> plan -> apply -> status."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplex_operator.builders import (
    Owner,
    RuntimeDefaults,
    build_deployment,
    build_service,
    initial_replicas,
)
from modelplex_operator.kube import ApplyRejected, KubeWriter
from modelplex_operator.naming import object_name
from modelplex_operator.plan import Action, plan
from modelplex_operator.status import (
    ModelObservation,
    build_status,
    ready_condition,
    ready_replicas,
    scalings,
    transitions,
)
from modelplex_spec.config import ConfigError, ModelplexConfig, parse_entries
from modelplex_spec.engines import engine_for


@dataclass
class ReconcileResult:
    problems: list[str] = field(default_factory=list)
    """Why the spec is invalid (nothing was applied)."""
    rejected: list[str] = field(default_factory=list)
    """Objects the API server refused (the rest was applied)."""
    ready_changed: bool = False
    """The Ready condition's status, reason or message differs from before this pass."""
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    transitions: list[tuple[str, str | None, str]] = field(default_factory=list)
    scalings: list[tuple[str, str]] = field(default_factory=list)


def _ready_changed(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    def ready(st: Mapping[str, Any]) -> tuple[Any, ...]:
        cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        return cond.get("status"), cond.get("reason"), cond.get("message")

    return ready(previous) != ready(status)


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_spec(spec: Mapping[str, Any]) -> ModelplexConfig:
    """Validate spec.models with the config file's rules; ConfigError lists every problem."""
    models = spec.get("models")
    if not isinstance(models, Mapping):
        raise ConfigError(["spec.models must be an object of label -> model entry"])
    # The API server fills CRD defaults and may keep explicit nulls; pydantic treats absent and null alike.
    raw = [(label, {k: v for k, v in dict(entry).items() if v is not None} if isinstance(entry, Mapping) else entry)
           for label, entry in models.items()]
    return parse_entries(raw, spec.get("defaultModelId") or None)


def desired_objects(
    owner: Owner, cfg: ModelplexConfig, defaults: RuntimeDefaults
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    deployments: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    for item in cfg.models:
        dep = build_deployment(owner, item.label, item.entry, defaults, replicas=initial_replicas(item.entry))
        svc = build_service(owner, item.label, item.entry)
        deployments[dep["metadata"]["name"]] = dep
        services[svc["metadata"]["name"]] = svc
    return deployments, services


async def reconcile(writer: KubeWriter, body: Mapping[str, Any], defaults: RuntimeDefaults) -> ReconcileResult:
    meta = body.get("metadata", {})
    name, namespace = meta["name"], meta["namespace"]
    generation = meta.get("generation")
    previous = dict(body.get("status") or {})
    now = now_iso()
    try:
        cfg = parse_spec(body.get("spec") or {})
    except ConfigError as exc:
        # Leave existing objects alone: a typo must not take running models down.
        cond = ready_condition({}, exc.problems, previous.get("conditions") or [], now, generation)
        status: dict[str, Any] = {"conditions": [cond]}
        if generation is not None:
            status["observedGeneration"] = generation
        await writer.patch_status(namespace, name, status)
        return ReconcileResult(problems=exc.problems, status=status, ready_changed=_ready_changed(previous, status))

    owner = Owner(name=name, namespace=namespace, uid=meta.get("uid", ""))
    want_deps, want_svcs = desired_objects(owner, cfg, defaults)
    have_deps, have_svcs = await writer.owned(namespace, name)
    actions = plan(want_deps, want_svcs, have_deps, have_svcs)
    applied: list[Action] = []
    rejected: list[str] = []
    for action in actions:
        try:
            await writer.apply(namespace, action)
            applied.append(action)
        except ApplyRejected as exc:
            rejected.append(str(exc))
    if actions:
        have_deps, _ = await writer.owned(namespace, name)

    observations = []
    for item in cfg.models:
        obj = object_name(name, item.label)
        dep = have_deps.get(obj)
        stuck = dep is not None and int(dep.get("spec", {}).get("replicas") or 0) > 0 and not ready_replicas(dep)
        pods = await writer.pods_of(namespace, dep) if stuck and dep is not None else ()
        observations.append(ModelObservation(item.entry.api_id, item.label, obj, dep, pods, engine_for(item.entry)))
    status = build_status(observations, cfg.default_model_id, previous, now, generation, rejected, "ApplyFailed")
    await writer.patch_status(namespace, name, status)
    return ReconcileResult(actions=applied, rejected=rejected, status=status, transitions=transitions(previous, status),
                           scalings=scalings(previous, status),
                           ready_changed=_ready_changed(previous, status))
