"""kopf handlers, registered on an explicit registry (nothing happens at import time)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from modelplex_operator.builders import RuntimeDefaults
from modelplex_operator.crd import GROUP, PLURAL, VERSION
from modelplex_operator.kube import KubeWriter, make_api_client
from modelplex_operator.naming import LABEL_MANAGED_BY, LABEL_MULTIMODEL, MANAGED_BY
from modelplex_operator.reconcile import ReconcileResult, reconcile
from modelplex_operator.settings import OperatorSettings


def configure_kopf(ks: kopf.OperatorSettings) -> None:
    # The status schema is structural, so kopf's own bookkeeping lives in annotations, not status.kopf.
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    ks.persistence.finalizer = f"{GROUP}/operator"
    ks.posting.level = logging.WARNING  # only our own events, not every handler log line
    ks.watching.server_timeout = 300
    ks.networking.error_backoffs = [1, 2, 5, 10, 30]
    # The CRD ships with the chart: no need to list namespaces or CRDs (and no RBAC for it).
    ks.scanning.disabled = True


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    defaults = RuntimeDefaults(
        image=settings.runtime_image,
        image_pull_policy=settings.runtime_image_pull_policy,
        service_account=settings.runtime_service_account,
        vllm_image=settings.vllm_image,
        vllm_image_pull_policy=settings.vllm_image_pull_policy,
    )
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    operator_settings = settings

    async def run(body: Any, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any]) -> ReconcileResult:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if memo.lifecycle["closing"]:  # shutting down: the API client is being closed
            return ReconcileResult()
        # Deployment events, timers and spec changes may all fire at once for one MultiModel.
        async with locks.setdefault(key, asyncio.Lock()):
            # Reconcile what the API has now (not a possibly stale event body); gone means nothing to do.
            fresh = await memo.writer.get_multimodel(*key)
            if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
                return ReconcileResult()
            result = await reconcile(memo.writer, fresh, defaults)
        for action in result.actions:
            logger.info("applied %s %s %s", action.verb, action.kind, action.name)
            kopf.event(body, type="Normal", reason=f"{action.kind}{action.verb.capitalize()}d",
                       message=f"{action.kind} {action.name}")
        for model_id, old, new in result.transitions:
            kopf.event(body, type="Warning" if new == "failed" else "Normal", reason="ModelStateChanged",
                       message=f"{model_id}: {old or 'new'} -> {new}")
        for model_id, decision in result.scalings:
            kopf.event(body, type="Normal", reason="ModelScaled", message=f"{model_id}: {decision}")
        # Only on a change of the Ready condition, not on every resync of an unchanged problem.
        if result.problems and result.ready_changed:
            kopf.event(body, type="Warning", reason="InvalidSpec", message="; ".join(result.problems))
        if result.rejected and result.ready_changed:
            kopf.event(body, type="Warning", reason="ApplyFailed", message="; ".join(result.rejected))
        return result

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        configure_kopf(settings)
        # A dict, not an attribute: kopf gives each object a shallow copy of the memo, so only a
        # shared mutable object lets cleanup tell running handlers that the client is going away.
        memo.lifecycle = {"closing": False}
        memo.api = await make_api_client(operator_settings.kube_api_url)
        memo.writer = KubeWriter(memo.api)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        memo.lifecycle["closing"] = True
        api = getattr(memo, "api", None)
        if api is not None:
            await api.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if operator_settings.kube_api_url:
            return kopf.ConnectionInfo(server=operator_settings.kube_api_url, insecure=True)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def on_spec(body: kopf.Body, memo: Any, logger: Any, **_: Any) -> None:
        result = await run(body, memo, logger)
        if result.problems:
            # Reported in status.conditions; retrying cannot fix a spec.
            raise kopf.PermanentError("invalid spec: " + "; ".join(result.problems))
        if result.rejected:
            # The periodic resync retries too; this just keeps kopf's own bookkeeping honest.
            raise kopf.TemporaryError("rejected by the API server: " + "; ".join(result.rejected), delay=60)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=settings.resync_seconds, idle=None, registry=registry)
    async def resync(body: kopf.Body, memo: Any, logger: Any, **_: Any) -> None:
        await run(body, memo, logger)

    @kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def on_deployment(body: kopf.Body, type: str | None, memo: Any, logger: Any, **_: Any) -> None:
        owner = (body.get("metadata", {}).get("labels") or {}).get(LABEL_MULTIMODEL)
        namespace = body.get("metadata", {}).get("namespace")
        if not owner or not namespace or not hasattr(memo, "writer"):
            return
        mm = await memo.writer.get_multimodel(namespace, owner)
        if mm is None or mm.get("metadata", {}).get("deletionTimestamp"):
            return
        await run(mm, memo, logger)
