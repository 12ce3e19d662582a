"""Names and labels of the objects the operator owns (Kubernetes naming rules, pure functions)."""

from __future__ import annotations

import hashlib
import re

GROUP = "modelplex.dev"
LABEL_MULTIMODEL = f"{GROUP}/multimodel"
LABEL_MODEL = f"{GROUP}/model"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelplex-operator"
ANNOTATION_LABEL = f"{GROUP}/label"
ANNOTATION_API_ID = f"{GROUP}/api-id"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
# Written by routers on the Deployment so several replicas agree on when a model was last used.
ANNOTATION_LAST_USED = f"{GROUP}/last-used"
# Written by the router that scaled the Deployment by load: "<time> <from> -> <to> (<router>): <reason>".
ANNOTATION_LAST_SCALING = f"{GROUP}/last-scaling"

_MAX_NAME = 63


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def object_name(multimodel: str, label: str) -> str:
    """The Deployment and Service name of one model: a DNS-1035 label unique per (MultiModel, label).

    Labels are free-form config keys ("Qwen3_4B", "llama3.2"), so when sanitizing changes anything a
    short hash is appended: "a_b" and "a-b" must not collide.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    base = f"{multimodel}-{slug}" if slug else multimodel
    base = re.sub(r"-{2,}", "-", base)
    if not base[0].isalpha():
        base = f"m-{base}"
    exact = slug == label
    if exact and len(base) <= _MAX_NAME:
        return base
    return f"{base[: _MAX_NAME - 9].rstrip('-')}-{_digest(multimodel, label)}"


def selector_labels(multimodel: str, name: str) -> dict[str, str]:
    """Labels selecting one model's pods (immutable once the Deployment exists)."""
    return {LABEL_MULTIMODEL: multimodel, LABEL_MODEL: name}


def object_labels(multimodel: str, name: str) -> dict[str, str]:
    return {
        **selector_labels(multimodel, name),
        "app.kubernetes.io/name": "modelplex-runtime",
        "app.kubernetes.io/instance": multimodel,
        "app.kubernetes.io/component": "model",
        LABEL_MANAGED_BY: MANAGED_BY,
    }
