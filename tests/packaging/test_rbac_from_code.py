"""The chart's Roles against the Kubernetes calls the code makes, read from the source itself."""

from __future__ import annotations

import re
from pathlib import Path

from test_chart import REPO, _verbs, one, render

CALL = re.compile(r"\.(read|get|list|patch|create|delete|replace)_namespaced_([a-z_]+?)(_scale|_status)?\(")
# A list call handed over uncalled (``return discovery.list_namespaced_endpoint_slice``) goes to
# kube_watch.ListWatch, which lists and watches with it.
WATCHED = re.compile(r"\.list_namespaced_([a-z_]+)\b(?!\()")
RESOURCES = {
    "deployment": ("apps", "deployments"),
    "pod": ("", "pods"),
    "service": ("", "services"),
    "custom_object": ("modelplex.dev", "multimodels"),  # the only custom resource the code touches
    "lease": ("coordination.k8s.io", "leases"),
    "endpoint_slice": ("discovery.k8s.io", "endpointslices"),
}
VERB = {"read": "get", "get": "get"}
# What kopf itself does for the operator: watch the handled resources, patch them (finalizers,
# progress annotations), and post Kubernetes events.
KOPF = {
    ("modelplex.dev", "multimodels"): {"list", "watch", "patch"},
    ("apps", "deployments"): {"list", "watch"},
    ("", "events"): {"create"},
}


def calls_in(*files: str) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for name in files:
        for verb, kind, sub in CALL.findall((REPO / name).read_text()):
            group, resource = RESOURCES[kind]
            resource += "/scale" if sub == "_scale" else "/status" if sub == "_status" else ""
            found.setdefault((group, resource), set()).add(VERB.get(verb, verb))
        for kind in WATCHED.findall((REPO / name).read_text()):
            found.setdefault(RESOURCES[kind], set()).update({"list", "watch"})
    return found


def _merge(*maps: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for m in maps:
        for key, verbs in m.items():
            out.setdefault(key, set()).update(verbs)
    return out


def test_router_role_is_exactly_the_calls_of_the_router(helm: Path) -> None:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "operator" / "modelplex_router").glob("kube_*.py"))
    code = calls_in(*files)
    assert code  # the regex still matches the client's call style
    assert _verbs(one(render(helm), "Role", "mp-modelplex-router")["rules"]) == code


def test_operator_role_is_exactly_its_calls_plus_kopf(helm: Path) -> None:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "operator" / "modelplex_operator").glob("*.py"))
    code = calls_in(*files)
    assert _verbs(one(render(helm), "ClusterRole", "mp-modelplex-operator")["rules"]) == _merge(code, KOPF)
