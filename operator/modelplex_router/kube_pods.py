"""A Deployment's pods, for what the Deployment itself does not say: why a load cannot finish (an image
pull error, a crash loop: ``modelplex_spec.pod_status``) and whether a stopped model's pods are gone
(a terminating pod still holds its GPU). Listed only while a load waits or a stop ends, never per tick.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from modelplex_router.kube_api import KubeApi
from modelplex_spec.engines import Engine
from modelplex_spec.pod_status import pod_problem

log = logging.getLogger("modelplex_router.kube")


async def deployment_pods(api: KubeApi, dep: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Deployment's pods (by its selector); None when they cannot be listed."""
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not match:
        return None
    try:
        pods = await api.list_pods(",".join(f"{k}={v}" for k, v in match.items()))
    except Exception as exc:  # no permission or no pods API: readiness still works without it
        log.debug("cannot list pods: %s", exc)
        return None
    # Filtered here too: the selector is the server's job, but a wrong match would misreport.
    return [p for p in pods if match.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()]


async def pod_problem_of(api: KubeApi, dep: Mapping[str, Any], engine: Engine) -> str | None:
    """Why the Deployment's pods cannot become ready (one line), or None."""
    pods = await deployment_pods(api, dep)
    return pod_problem(pods, engine) if pods else None


async def pods_left(api: KubeApi, dep: Mapping[str, Any], unloaded: int) -> str | None:
    """A pod beyond ``unloaded`` that still exists (terminating or not); None when there is none."""
    pods = await deployment_pods(api, dep)
    if pods is None:  # pods cannot be listed: fall back to the Deployment's own count
        dep = await api.read_deployment(dep["metadata"]["name"])
        count = int((dep.get("status") or {}).get("replicas") or 0)
        return None if count <= unloaded else f"({count} replicas)"
    return pods[unloaded]["metadata"]["name"] if len(pods) > unloaded else None
