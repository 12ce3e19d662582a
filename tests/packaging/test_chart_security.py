"""Chart hardening: the runtime NetworkPolicy, the API keys Secret mount, security contexts everywhere."""

from __future__ import annotations

from pathlib import Path

from test_chart import by_kind, one, render

from modelplex_operator.builders import RUNTIME_PORT


def _router(docs):
    return one(docs, "Deployment", "mp-modelplex-router")["spec"]["template"]["spec"]


def test_networkpolicy_admits_only_router_pods_on_the_runtime_port(helm: Path) -> None:
    docs = render(helm)
    policy = one(docs, "NetworkPolicy", "mp-modelplex-runtime")
    assert policy["metadata"]["namespace"] == "modelplex"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "modelplex-runtime"}}
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": RUNTIME_PORT, "protocol": "TCP"}]
    [peer] = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "modelplex"}}
    router_labels = one(docs, "Deployment", "mp-modelplex-router")["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= router_labels.items()

    # The router's own pods accept only their HTTP port, the operator's only its health port.
    router_policy = one(docs, "NetworkPolicy", "mp-modelplex-router")["spec"]
    assert router_policy["ingress"] == [{"ports": [{"port": 1234, "protocol": "TCP"}]}]
    operator_policy = one(docs, "NetworkPolicy", "mp-modelplex-operator")["spec"]
    assert operator_policy["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]

    scoped = render(helm, "operator.watchNamespaces={team-a,team-b}", "router.namespace=team-a")
    runtime = [p for p in by_kind(scoped, "NetworkPolicy") if p["metadata"]["name"] == "mp-modelplex-runtime"]
    assert sorted(p["metadata"]["namespace"] for p in runtime) == ["team-a", "team-b"]
    assert by_kind(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy") == []


def test_api_keys_secret_is_mounted_as_a_directory(helm: Path) -> None:
    plain = _router(render(helm))
    env = {e["name"]: e.get("value") for e in plain["containers"][0]["env"]}
    assert "MODELPLEX_ROUTER_API_KEYS_FILE" not in env and env["MODELPLEX_ROUTER_REQUIRE_API_KEYS"] == "false"
    assert env["MODELPLEX_ROUTER_CATALOG_REFRESH_SECONDS"] == "5"
    assert env["MODELPLEX_ROUTER_KUBE_LAST_USED_INTERVAL"] == "30"

    pod = _router(render(helm, "auth.existingSecret=keys", "auth.required=true"))
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELPLEX_ROUTER_API_KEYS_FILE"] == "/etc/modelplex/keys/keys.json"
    assert env["MODELPLEX_ROUTER_REQUIRE_API_KEYS"] == "true"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    # No subPath: kubelet only updates Secret files mounted as a whole directory.
    assert mount == {"name": "api-keys", "mountPath": "/etc/modelplex/keys", "readOnly": True}
    [volume] = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "keys"


def test_every_container_is_hardened(helm: Path) -> None:
    for doc in by_kind(render(helm), "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
