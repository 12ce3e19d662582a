"""Desired-state builders: a model entry in, the Deployment and Service that serve it out (pure).

The pod runs the entry's engine (``modelplex_spec.engines``): the modelplex runtime image, or vLLM's image
for ``engine: vllm``, with the command line from the same mapping the local backend uses.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from modelplex_operator.crd import GROUP, KIND, VERSION
from modelplex_operator.naming import (
    ANNOTATION_API_ID,
    ANNOTATION_LABEL,
    ANNOTATION_SPEC_HASH,
    object_labels,
    object_name,
    selector_labels,
)
from modelplex_spec import KubernetesSettings, ModelEntry
from modelplex_spec.engines import VLLM, Engine, engine_for

RUNTIME_PORT = 8000
RUNTIME_UID = 1000
STARTUP_PERIOD_SECONDS = 10
# vLLM's OpenAI-server image of the release the vLLM mapping is written for.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
# The writable emptyDir every runtime container works, caches and keeps its home in.
WRITABLE_ROOT = "/tmp"


@dataclass(frozen=True)
class RuntimeDefaults:
    """Cluster-wide defaults for runtime pods, from the operator's settings."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    vllm_image: str = DEFAULT_VLLM_IMAGE
    vllm_image_pull_policy: str = "IfNotPresent"

    def image_for(self, engine: Engine) -> tuple[str, str]:
        """The image and pull policy of an engine's pods (a model's ``kubernetes.image`` wins)."""
        if engine is VLLM:
            return self.vllm_image, self.vllm_image_pull_policy
        return self.image, self.image_pull_policy


@dataclass(frozen=True)
class Owner:
    """The MultiModel that owns the objects (for names, namespace and the owner reference)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def initial_replicas(entry: ModelEntry) -> int:
    """Replicas at creation only; afterwards the router owns the count (load, autoscaling, unload, idle). A
    model loaded from the start gets what a load starts (``max(minReplicas, 1)``); load takes it further."""
    scaling = entry.effective_scaling
    return scaling.floor if entry.pinned or entry.preload else scaling.min_replicas


def _resources(k8s: KubernetesSettings) -> dict[str, Any]:
    res = k8s.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.cpuLimit:
        limits["cpu"] = res.cpuLimit
    if res.memory:
        requests["memory"] = res.memory
        limits["memory"] = res.memory
    if res.gpus:
        # Extended resources are requested through limits (requests default to them).
        limits[res.gpuResourceName] = str(res.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env(k8s: KubernetesSettings, cache_path: str, engine: Engine, launch_env: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": cache_path}]
    # Libraries write caches under $HOME (and the engine names more places); the root filesystem is read-only.
    env += [{"name": name, "value": value} for name, value in engine.writable_env(WRITABLE_ROOT).items()]
    env += [{"name": name, "value": value} for name, value in launch_env.items()]
    if k8s.hfTokenSecret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": k8s.hfTokenSecret.name, "key": k8s.hfTokenSecret.key}},
            }
        )
    for var in k8s.env or []:
        env.append(var.model_dump(exclude_none=True))
    return env


def _volumes(k8s: KubernetesSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    cache = k8s.modelCache
    mount_path = cache.mountPath if cache else "/models"
    if cache and cache.pvcName:
        cache_volume: dict[str, Any] = {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.pvcName}}
    else:
        empty: dict[str, Any] = {}
        if cache and cache.sizeLimit:
            empty["sizeLimit"] = cache.sizeLimit
        cache_volume = {"name": "model-cache", "emptyDir": empty}
    volumes = [
        cache_volume,
        {"name": "tmp", "emptyDir": {}},
        # torch and NCCL use shared memory; the container default (64Mi) is too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [
        {"name": "model-cache", "mountPath": mount_path},
        {"name": "tmp", "mountPath": WRITABLE_ROOT},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return volumes, mounts, mount_path


def _probes(k8s: KubernetesSettings, engine: Engine) -> dict[str, Any]:
    # The server answers its readiness path only when the weights are loaded (the runtime's /ready; vLLM
    # serves nothing, /health included, before its engine is up), so the startup probe on it is the loading
    # budget; liveness and readiness only start after it succeeds.
    failures = max(1, math.ceil(k8s.startupTimeoutSeconds / STARTUP_PERIOD_SECONDS))
    return {
        "startupProbe": {
            "httpGet": {"path": engine.ready_path, "port": "http"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": failures,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "httpGet": {"path": engine.ready_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": engine.health_path, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
            "timeoutSeconds": 5,
        },
    }


def _pod_spec(entry: ModelEntry, k8s: KubernetesSettings, defaults: RuntimeDefaults) -> dict[str, Any]:
    volumes, mounts, cache_path = _volumes(k8s)
    engine = engine_for(entry)
    launch = engine.launch(
        entry, host="0.0.0.0", port=RUNTIME_PORT, served_model_name=entry.api_id, gpus=k8s.resources.gpus
    )
    image, pull_policy = defaults.image_for(engine)
    container: dict[str, Any] = {
        "name": "runtime",
        "image": k8s.image or image,
        "imagePullPolicy": k8s.imagePullPolicy or pull_policy,
        "command": [engine.image_python, "-m", launch.module],
        "args": launch.args,
        "workingDir": WRITABLE_ROOT,
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "env": _env(k8s, cache_path, engine, launch.env),
        "resources": _resources(k8s),
        "volumeMounts": mounts,
        # Where a crashed container wrote no termination message (vLLM, or killed before it could), the end
        # of its log is the message: the router and the status read the reason from it (pod_status).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "capabilities": {"drop": ["ALL"]},
        },
        **_probes(k8s, engine),
    }
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            # Makes a fresh PVC writable by the non-root user.
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if defaults.service_account:
        pod["serviceAccountName"] = defaults.service_account
    if k8s.nodeSelector:
        pod["nodeSelector"] = dict(k8s.nodeSelector)
    if k8s.tolerations:
        pod["tolerations"] = list(k8s.tolerations)
    if k8s.affinity:
        pod["affinity"] = dict(k8s.affinity)
    if k8s.priorityClassName:
        pod["priorityClassName"] = k8s.priorityClassName
    return pod


def scrape_annotations(engine: Engine) -> dict[str, str]:
    """Where annotation-driven Prometheus scrapers find the engine's own metrics in the pod."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(RUNTIME_PORT),
        "prometheus.io/path": engine.metrics_path,
    }


def spec_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_deployment(
    owner: Owner, label: str, entry: ModelEntry, defaults: RuntimeDefaults, *, replicas: int | None = None
) -> dict[str, Any]:
    """The model's Deployment; ``replicas`` is set only when creating (None leaves the count alone)."""
    k8s = entry.kubernetes or KubernetesSettings()
    name = object_name(owner.name, label)
    labels = object_labels(owner.name, name)
    template = {
        "metadata": {"labels": labels, "annotations": scrape_annotations(engine_for(entry))},
        "spec": _pod_spec(entry, k8s, defaults),
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner.name, name)},
        # maxSurge 0: a rollout never needs a second set of GPUs.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": k8s.startupTimeoutSeconds + 300,
        "template": template,
    }
    digest = spec_hash(spec)
    template["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = digest
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_LABEL: label, ANNOTATION_API_ID: entry.api_id, ANNOTATION_SPEC_HASH: digest},
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }


def build_service(owner: Owner, label: str, entry: ModelEntry) -> dict[str, Any]:
    name = object_name(owner.name, label)
    labels = object_labels(owner.name, name)
    spec = {
        "type": "ClusterIP",
        "selector": selector_labels(owner.name, name),
        "ports": [{"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_LABEL: label, ANNOTATION_API_ID: entry.api_id, ANNOTATION_SPEC_HASH: spec_hash(spec)},
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{RUNTIME_PORT}"
