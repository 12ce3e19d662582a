"""Per-model settings that only matter on Kubernetes (camelCase, as in Kubernetes objects)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _K8sModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# Kubernetes resource quantities ("500m", "2", "16Gi", "1e3"); the pattern also lands in the CRD schema,
# so the API server rejects "16GB" instead of the Deployment failing later.
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
# A container environment variable name.
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


class ResourceSettings(_K8sModel):
    gpus: int = Field(default=0, ge=0, description="GPUs per replica.")
    gpuResourceName: str = Field(default="nvidia.com/gpu", description="Extended resource name of the GPU.")
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description='CPU request, e.g. "2" or "500m".')
    memory: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, description='Memory request and limit, e.g. "16Gi".'
    )
    cpuLimit: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description="CPU limit; unset means none.")


class EnvVar(_K8sModel):
    name: str = Field(min_length=1, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    valueFrom: dict[str, Any] | None = Field(default=None, description="As in a container's env valueFrom.")


class SecretKeyRef(_K8sModel):
    name: str = Field(min_length=1, description="Secret name.")
    key: str = Field(default="HF_TOKEN", description="Key inside the Secret.")


class ModelCache(_K8sModel):
    pvcName: str | None = Field(default=None, description="PersistentVolumeClaim holding the hub cache.")
    mountPath: str = Field(default="/models", description="Where the cache is mounted; HF_HOME points here.")
    sizeLimit: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, description="emptyDir size limit when no PVC is named."
    )


class KubernetesSettings(_K8sModel):
    image: str | None = Field(default=None, description="Runtime image override.")
    imagePullPolicy: str | None = Field(
        default=None, pattern=r"^(Always|IfNotPresent|Never)$", description="Always, IfNotPresent or Never."
    )
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    nodeSelector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    priorityClassName: str | None = None
    # Unset unless given (no schema default), so that a `scaling` block giving the same field can be told
    # apart from a default; ModelEntry.effective_scaling resolves them (modelplex_spec.scaling).
    minReplicas: int | None = Field(
        default=None, ge=0, description="Same as scaling.minReplicas: replicas kept when unloaded (default 0)."
    )
    maxReplicas: int | None = Field(
        default=None, ge=1, description="Same as scaling.maxReplicas: the most replicas while loaded (default 1)."
    )
    env: list[EnvVar] | None = None
    modelCache: ModelCache | None = None
    hfTokenSecret: SecretKeyRef | None = Field(default=None, description="Secret key exposed as HF_TOKEN.")
    startupTimeoutSeconds: int = Field(
        default=1800, ge=30, description="How long the pod may take to load weights before it is restarted."
    )

