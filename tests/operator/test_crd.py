"""The MultiModel CRD: generated from the entry schema, structural, and in sync with crds/ and the chart."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelplex.commands.manifest import build_manifest
from modelplex_operator.crd import build_crd, render_crd
from modelplex_operator.reconcile import parse_spec
from modelplex_spec import parse_config

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "multimodels.modelplex.dev.yaml"
CHART_COPY = REPO / "charts" / "modelplex" / "files" / "multimodels.modelplex.dev.yaml"
EXAMPLES = sorted([*(REPO / "examples" / "kubernetes").glob("*.yaml"), *(REPO / "charts/modelplex/examples").glob("*.yaml")])
KUBE_VERSION = "1.33.0"


def test_committed_crd_matches_the_generator() -> None:
    # Regenerate with: python -m modelplex_operator.crd > crds/multimodels.modelplex.dev.yaml
    # and copy it to charts/modelplex/files/.
    assert CRD_FILE.read_text() == render_crd(), "crds/ drifted from modelplex_spec: regenerate it"
    assert CHART_COPY.read_text() == CRD_FILE.read_text(), "the chart's CRD copy drifted from crds/"


def test_crd_is_a_valid_customresourcedefinition() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), KUBE_VERSION, strict=True)


def _walk(node: Any, path: str = "$") -> list[str]:
    """Structural-schema violations under node (the rules the API server enforces)."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title"):
        if bad in node:
            problems.append(f"{path}: has {bad}")
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not preserve:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("default", 0) is None:
        problems.append(f"{path}: null default")
    for key, sub in (node.get("properties") or {}).items():
        problems += _walk(sub, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    return problems


def openapi_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural() -> None:
    assert _walk(openapi_schema()) == []


def test_schema_covers_every_entry_field_and_the_accepted_synonyms() -> None:
    entry = openapi_schema()["properties"]["spec"]["properties"]["models"]["additionalProperties"]
    props = entry["properties"]
    for key in ("Plain", "VisionPlain", "MultimodalPlain", "GGUF", "Embedding", "alias", "in_situ_quant",
                "chat_template", "jinja_explicit", "num_device_layers", "idle_timeout", "ttl", "pinned",
                "preload", "scaling", "kubernetes"):
        assert key in props, key
    k8s = props["kubernetes"]["properties"]
    assert k8s["tolerations"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert k8s["nodeSelector"]["additionalProperties"] == {"type": "string"}
    assert k8s["resources"]["properties"]["gpus"]["minimum"] == 0
    assert props["Plain"]["properties"]["max_seq_len"]["exclusiveMinimum"] is True
    assert props["alias"]["nullable"] is True
    rules = " ".join(r["rule"] for r in entry["x-kubernetes-validations"])
    assert "size() == 1" in rules and "'default'" in rules
    assert "minReplicas <= self.maxReplicas" in props["kubernetes"]["x-kubernetes-validations"][0]["rule"]
    assert "minReplicas <= self.maxReplicas" in props["scaling"]["x-kubernetes-validations"][0]["rule"]
    assert props["scaling"]["properties"]["routing"]["enum"] == ["least-outstanding", "prefix-affinity", "round-robin"]
    assert "contradicts kubernetes.maxReplicas" in " ".join(r["message"] for r in entry["x-kubernetes-validations"])


def test_crd_names_and_printer_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "multimodels.modelplex.dev"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["shortNames"] == ["mm"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Models", "Loaded", "Default", "Age"]


def _as_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (nullable, boolean exclusiveMinimum) -> JSON Schema draft 4, for jsonschema."""
    if isinstance(node, list):
        return [_as_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    out.pop("nullable", None)
    out.pop("format", None)
    if "properties" in out:
        # Structural schemas prune unknown fields; for examples we want to hear about typos instead.
        out.setdefault("additionalProperties", False)
    return out


def validate_instance(obj: dict[str, Any]) -> None:
    schema = _as_jsonschema(copy.deepcopy(openapi_schema()))
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.Draft4Validator(schema).validate(obj)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_and_the_entry_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "modelplex.dev/v1alpha1" and doc["kind"] == "MultiModel"
        validate_instance(doc)
        parse_spec(doc["spec"])  # the operator accepts it too (cross-field rules)


def test_schema_rejects_bad_values() -> None:
    good = {"apiVersion": "modelplex.dev/v1alpha1", "kind": "MultiModel", "metadata": {"name": "x"},
            "spec": {"models": {"a": {"Plain": {"model_id": "m"}}}}}
    validate_instance(good)
    for patch in ({"Plain": {"model_id": "m", "dtype": "int3"}},
                  {"Plain": {"model_id": "m"}, "kubernetes": {"resources": {"gpus": -1}}},
                  {"Plain": {"model_id": "m"}, "idle_timeout": 0},
                  {"Plain": {"model_id": "m"}, "kubernetes": {"resources": {"memory": "16GB"}}},
                  {"Plain": {"model_id": "m"}, "kubernetes": {"env": [{"name": "1 BAD", "value": "x"}]}},
                  {"Plain": {"model_id": "m"}, "kubernetes": {"imagePullPolicy": "Sometimes"}},
                  {"Plain": {"model_id": "m"}, "bogus": 1}):
        bad = copy.deepcopy(good)
        bad["spec"]["models"]["a"] = patch
        with pytest.raises(jsonschema.ValidationError):
            validate_instance(bad)
    empty = copy.deepcopy(good)
    empty["spec"]["models"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate_instance(empty)


def test_manifest_command_output_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelplex.commands.manifest import run

    cfg = {
        "llama3-3b": {"alias": "llama3-3b", "Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
        "qwen3-4b": {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K", "ttl": 60,
                     "kubernetes": {"resources": {"gpus": 1}, "hfTokenSecret": {"name": "hf"}}},
        "vision": {"MultimodalPlain": {"model_id": "google/gemma-3-4b-it"}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    args = argparse.Namespace(file=path, name="demo", namespace="ai", default_model_id="Qwen/Qwen3-4B", output="yaml")
    assert run(args) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    validate_instance(manifest)
    assert manifest["metadata"] == {"name": "demo", "namespace": "ai"}
    assert manifest["spec"]["defaultModelId"] == "Qwen/Qwen3-4B"
    assert manifest["spec"]["models"]["qwen3-4b"]["idle_timeout"] == 60
    assert manifest["spec"]["models"]["vision"]["VisionPlain"] == {"model_id": "google/gemma-3-4b-it"}
    # Round trip: the manifest's models are the same config.
    again = parse_spec(manifest["spec"])
    assert again.by_api_id().keys() == parse_config(cfg).by_api_id().keys()
    assert build_manifest(again, "demo")["spec"]["models"] == manifest["spec"]["models"]


def test_manifest_command_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelplex.commands.manifest import run

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"a": {"Plain": {"model_id": "x"}}, "b": {"Plain": {"model_id": "x"}}}))
    args = argparse.Namespace(file=path, name="demo", namespace=None, default_model_id=None, output="yaml")
    assert run(args) == 1
    assert "both use the API id 'x'" in capsys.readouterr().err
    args.name = "Bad_Name"
    assert run(args) == 2
    assert "--name 'Bad_Name'" in capsys.readouterr().err


def _cel_rules(schema: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in schema.get("x-kubernetes-validations", [])]


def _cel_passes(rules: list[str], obj: dict[str, Any]) -> bool:
    import celpy

    env = celpy.Environment()
    # lowerAscii comes from the Kubernetes CEL strings library, which celpy lacks.
    functions = {"lowerAscii": lambda s: celpy.celtypes.StringType(str(s).lower())}
    return all(bool(env.program(env.compile(rule), functions=functions).evaluate({"self": celpy.json_to_cel(obj)}))
               for rule in rules)


@pytest.mark.parametrize(("entry", "ok"), [
    ({"Plain": {"model_id": "m"}, "alias": "m"}, True),
    ({"MultimodalPlain": {"model_id": "m"}, "ttl": 5}, True),
    ({"GGUF": {"quantized_model_id": "q", "quantized_filename": "f.gguf"}}, True),
    ({}, False),
    ({"Plain": {"model_id": "m"}, "Embedding": {"model_id": "e"}}, False),
    ({"Plain": {"model_id": "m"}, "alias": "Default"}, False),
    ({"Plain": {"model_id": "m"}, "ttl": 5, "idle_timeout": 5}, False),
    ({"GGUF": {"quantized_model_id": "q", "quantized_filename": "f"}, "in_situ_quant": "Q4K"}, False),
    # The scaling block and the older kubernetes fields (modelplex_spec.scaling).
    ({"Plain": {"model_id": "m"}, "scaling": {"maxReplicas": 4}, "kubernetes": {"maxReplicas": 4}}, True),
    ({"Plain": {"model_id": "m"}, "scaling": {"maxReplicas": 4}, "kubernetes": {"maxReplicas": 2}}, False),
    ({"Plain": {"model_id": "m"}, "scaling": {"minReplicas": 1}, "kubernetes": {"minReplicas": 0}}, False),
    ({"Plain": {"model_id": "m"}, "scaling": {"minReplicas": 3}}, False),
    ({"Plain": {"model_id": "m"}, "scaling": {"minReplicas": 3}, "kubernetes": {"maxReplicas": 4}}, True),
    ({"Plain": {"model_id": "m"}, "scaling": {"maxReplicas": 1}, "kubernetes": {"minReplicas": 2}}, False),
    ({"Plain": {"model_id": "m"}, "kubernetes": {"minReplicas": 1, "maxReplicas": 3}}, True),
])
def test_cel_rules_agree_with_the_entry_model(entry: dict[str, Any], ok: bool) -> None:
    from modelplex_spec import ModelEntry

    schema = openapi_schema()["properties"]["spec"]["properties"]["models"]["additionalProperties"]
    assert _cel_passes(_cel_rules(schema), entry) is ok
    try:
        ModelEntry.model_validate(entry)
        pydantic_ok = True
    except ValueError:
        pydantic_ok = False
    assert pydantic_ok is ok  # the API server and the config file agree


@pytest.mark.parametrize(("k8s", "ok"), [({"minReplicas": 0, "maxReplicas": 1}, True),
                                         ({"minReplicas": 2, "maxReplicas": 1}, False), ({}, True)])
def test_cel_replica_rule(k8s: dict[str, Any], ok: bool) -> None:
    schema = openapi_schema()["properties"]["spec"]["properties"]["models"]["additionalProperties"]
    assert _cel_passes(_cel_rules(schema["properties"]["kubernetes"]), k8s) is ok
