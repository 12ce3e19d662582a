"""Generate the MultiModel CRD from the pydantic entry schema (the config file's schema).

Run ``python -m modelplex_operator.crd > crds/multimodels.modelplex.dev.yaml``; a test regenerates it
and fails when the committed file (or the chart's copy) drifts.

Kubernetes wants a *structural* openAPIV3Schema: every node typed, no $ref, no anyOf with types,
no additionalProperties next to properties. ``structural()`` rewrites pydantic's JSON schema into that.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from modelplex_spec import ModelEntry
from modelplex_spec.scaling import DEFAULT_MAX_REPLICAS, DEFAULT_MIN_REPLICAS

GROUP = "modelplex.dev"
VERSION = "v1alpha1"
KIND = "MultiModel"
PLURAL = "multimodels"
SINGULAR = "multimodel"
SHORT_NAMES = ["mm"]
CRD_NAME = f"{PLURAL}.{GROUP}"

_DROPPED_KEYS = {"title", "$schema", "examples"}
STATES = ["loaded", "unloaded", "loading", "failed"]
MAX_MODELS = 100
MAX_ALIAS_LENGTH = 253


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one (already $ref-free) JSON-schema node into Kubernetes structural form."""
    node = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    options = node.pop("anyOf", None)
    if options is not None:
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express anyOf {options!r} structurally")
        inner = structural(non_null[0])
        # Keep the outer node's docs; the inner node carries the type.
        for key in ("description", "default"):
            if key in node:
                inner[key] = node.pop(key)
        node = {**inner, **{k: v for k, v in node.items()}}
        if len(non_null) != len(options):
            node["nullable"] = True
    if node.get("default", 0) is None:
        node.pop("default")
    # JSON Schema 2020's numeric exclusiveMinimum is a boolean flag in OpenAPI v3.
    if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if node.get("type") == "object":
        props = node.get("properties")
        extra = node.pop("additionalProperties", None)
        if props is not None:
            node["properties"] = {k: structural(v) for k, v in props.items()}
        elif extra is True or extra is None or extra == {}:
            node["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            node["additionalProperties"] = structural(extra)
    if node.get("type") == "array" and "items" in node:
        node["items"] = structural(node["items"])
    return node


# Cross-field rules pydantic enforces that the API server can enforce too (CEL, Kubernetes >= 1.25).
_ENTRY_RULES = [
    {
        "rule": "[has(self.Plain), has(self.VisionPlain), has(self.MultimodalPlain), has(self.GGUF),"
        " has(self.Embedding)].filter(x, x).size() == 1",
        "message": "a model entry needs exactly one kind: Plain, VisionPlain (MultimodalPlain), GGUF or Embedding",
    },
    {"rule": "!(has(self.ttl) && has(self.idle_timeout))", "message": "give either ttl or idle_timeout, not both"},
    {
        "rule": "!has(self.alias) || self.alias.lowerAscii() != 'default'",
        "message": '"default" is reserved for the default model and cannot be an alias',
    },
    {
        "rule": "!has(self.in_situ_quant) || !has(self.GGUF)",
        "message": "in_situ_quant does not apply to GGUF models: their weights are already quantized",
    },
]
_REPLICA_ORDER_RULE = {
    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
    "message": "minReplicas exceeds maxReplicas",
}
_KUBERNETES_RULES = [_REPLICA_ORDER_RULE]
_SCALING_RULES = [_REPLICA_ORDER_RULE]


def _given(field: str) -> str:
    return f"(has(self.scaling) && has(self.scaling.{field}))"


def _kube_given(field: str) -> str:
    return f"(has(self.kubernetes) && has(self.kubernetes.{field}))"


def _replicas(field: str, default: int) -> str:
    """CEL for a replica field as resolve_scaling reads it: the scaling block, else kubernetes, else default."""
    return (
        f"({_given(field)} ? self.scaling.{field} : "
        f"({_kube_given(field)} ? self.kubernetes.{field} : {default}))"
    )


# modelplex_spec.scaling: the two places may not disagree, and the combination must be ordered.
_REPLICA_SOURCE_RULES = [
    *(
        {
            "rule": f"!{_given(field)} || !{_kube_given(field)} || self.scaling.{field} == self.kubernetes.{field}",
            "message": f"scaling.{field} contradicts kubernetes.{field}; give it in one place",
        }
        for field in ("minReplicas", "maxReplicas")
    ),
    {
        "rule": f"{_replicas('minReplicas', DEFAULT_MIN_REPLICAS)} <= {_replicas('maxReplicas', DEFAULT_MAX_REPLICAS)}",
        "message": f"minReplicas exceeds maxReplicas (maxReplicas defaults to {DEFAULT_MAX_REPLICAS})",
    },
]


def entry_schema() -> dict[str, Any]:
    """The structural schema of one spec.models entry, from ModelEntry's JSON schema."""
    raw = ModelEntry.model_json_schema(by_alias=True)
    resolved = _resolve(raw, raw.get("$defs", {}))
    schema = structural(resolved)
    props = schema["properties"]
    # Names ModelEntry accepts through its before-validator; without them the API server would prune them.
    props["MultimodalPlain"] = {**copy.deepcopy(props["VisionPlain"]), "description": "Newer name of VisionPlain."}
    props["ttl"] = {**copy.deepcopy(props["idle_timeout"]), "description": "Same as idle_timeout (llama-swap's name)."}
    # CEL rules are priced by the largest input the schema allows; bounded sizes keep the CRD's
    # estimated cost inside the API server's budget.
    props["alias"]["maxLength"] = MAX_ALIAS_LENGTH
    schema["x-kubernetes-validations"] = [*_ENTRY_RULES, *_REPLICA_SOURCE_RULES]
    props["kubernetes"]["x-kubernetes-validations"] = _KUBERNETES_RULES
    props["scaling"]["x-kubernetes-validations"] = _SCALING_RULES
    return schema


def status_schema() -> dict[str, Any]:
    model_status = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "description": "The key under spec.models."},
            "state": {"type": "string", "enum": STATES},
            "replicas": {"type": "integer", "description": "Desired replicas of the model's Deployment."},
            "readyReplicas": {"type": "integer"},
            "deployment": {"type": "string"},
            "service": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "lastScaling": {
                "type": "string",
                "description": "The autoscaler's last decision: '<time> <from> -> <to> (<router pod>): <reason>'.",
            },
        },
    }
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "models": {
                "type": "object",
                "description": "Per API model id.",
                "additionalProperties": model_status,
            },
            "modelCount": {"type": "integer"},
            "loadedCount": {"type": "integer"},
            "defaultModel": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "observedGeneration": {"type": "integer"},
        },
    }


def spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["models"],
        "properties": {
            "defaultModelId": {
                "type": "string",
                "description": "API id (alias or pipeline name) of the default model; defaults to the first model.",
            },
            "models": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_MODELS,
                "description": "Label -> model entry, exactly as in the config file, plus `kubernetes` settings.",
                "additionalProperties": entry_schema(),
            },
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": SHORT_NAMES,
                      "listKind": f"{KIND}List"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Models", "type": "integer", "jsonPath": ".status.modelCount"},
                        {"name": "Loaded", "type": "integer", "jsonPath": ".status.loadedCount"},
                        {"name": "Default", "type": "string", "jsonPath": ".status.defaultModel"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Many models served behind one OpenAI-compatible router, one Deployment each.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    import yaml

    header = "# Generated by `python -m modelplex_operator.crd` from modelplex_spec; do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main() -> int:
    sys.stdout.write(render_crd())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
