"""Run the router: build the backend named by the settings, the app, and serve it with uvicorn."""

from __future__ import annotations

import logging
import os
import resource

import uvicorn

from modelplex_router.app import create_app
from modelplex_router.backend import ModelBackend
from modelplex_router.connection_guard import guarded_protocol
from modelplex_router.logs import configure_logging
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelplexConfig

log = logging.getLogger("modelplex_router")


def build_backend(settings: RouterSettings) -> ModelBackend:
    if settings.backend == "kubernetes":
        # Imported only when asked for: the local default needs no Kubernetes client.
        from modelplex_router.kube_backend import build_kube_backend

        return build_kube_backend(settings)
    from modelplex_router.cpus import allowed_cpus
    from modelplex_router.gpus import detect_gpus
    from modelplex_router.local_backend import LocalProcessBackend
    from modelplex_spec.engines import VLLM

    gpus = settings.gpus if settings.gpus is not None else detect_gpus()
    return LocalProcessBackend(
        settings.runtime_command,
        host=settings.runtime_host,
        # One body limit: the runtime refuses nothing the router let through.
        env={**os.environ, "MODELPLEX_RUNTIME_MAX_BODY_BYTES": str(settings.max_body_bytes)},
        spares=settings.spare_runtimes,
        engine_commands={VLLM.name: [settings.vllm_python, "-m", VLLM.module]},
        gpus=gpus,
        cpus=allowed_cpus() if settings.split_cpus and not gpus else (),
        ready_timeout=settings.load_timeout_seconds,
    )


def run(settings: RouterSettings, config: ModelplexConfig | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; every runtime started is stopped on the way out."""
    configure_logging(settings.log_level, settings.log_json)
    backend = build_backend(settings)
    catalog_source = None
    if config is None and not settings.config_file and settings.backend == "kubernetes":
        # On a cluster the models come from the MultiModel resources, not a file: read them once now
        # (an invalid spec stops the start with its problems), then again while serving.
        from modelplex_router.kube_backend import cluster_catalog_source, load_cluster_config

        config = load_cluster_config(settings)
        catalog_source = cluster_catalog_source(backend, settings)
    app = create_app(settings, backend, config, catalog_source)
    _allow_open_files(settings.max_connections + settings.upstream_max_connections + 256)
    metrics = app.state.metrics
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_grace_seconds) or None,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        http=guarded_protocol(
            settings.header_timeout_seconds,
            settings.max_connections,
            settings.retry_after_seconds,
            lambda reason: metrics.connections_closed.labels(reason=reason).inc(),
        ),
    )


def _allow_open_files(wanted: int) -> None:
    """Raise the soft open-files limit towards ``wanted`` (client and runtime connections, the runtimes'
    pipes): a soft limit of 1024, common outside containers, would refuse connections far below the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning(
            "open files are limited to %d, fewer than max_connections + upstream_max_connections need (%d)",
            hard,
            wanted,
        )
