"""Decide which writes bring the cluster to the desired state (pure: observed + desired in, actions out)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from modelplex_operator.naming import ANNOTATION_SPEC_HASH

Verb = Literal["create", "update", "delete"]
ObjectKind = Literal["Deployment", "Service"]


@dataclass(frozen=True)
class Action:
    verb: Verb
    kind: ObjectKind
    name: str
    body: dict[str, Any] | None = None


def _hash(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)


def _without_replicas(body: dict[str, Any]) -> dict[str, Any]:
    # Replicas belong to the router once the Deployment exists (as with an HPA): never send them again.
    body = copy.deepcopy(body)
    body.get("spec", {}).pop("replicas", None)
    return body


def plan_kind(kind: ObjectKind, desired: dict[str, dict[str, Any]], observed: dict[str, dict[str, Any]]) -> list[Action]:
    actions: list[Action] = []
    for name, body in desired.items():
        current = observed.get(name)
        if current is None:
            actions.append(Action("create", kind, name, body))
        elif _hash(current) != _hash(body):
            actions.append(Action("update", kind, name, _without_replicas(body) if kind == "Deployment" else body))
    for name in observed:
        if name not in desired:
            actions.append(Action("delete", kind, name))
    return actions


def plan(
    desired_deployments: dict[str, dict[str, Any]],
    desired_services: dict[str, dict[str, Any]],
    observed_deployments: dict[str, dict[str, Any]],
    observed_services: dict[str, dict[str, Any]],
) -> list[Action]:
    """Creates and updates before deletes, Deployments before Services (a Service without pods is harmless)."""
    actions = plan_kind("Deployment", desired_deployments, observed_deployments)
    actions += plan_kind("Service", desired_services, observed_services)
    return [a for a in actions if a.verb != "delete"] + [a for a in actions if a.verb == "delete"]
