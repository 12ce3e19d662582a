"""ModelRouter.apply_config / refresh_catalog: the catalog changes while the router runs (no runtimes)."""

from __future__ import annotations

import pytest

from modelplex_router.errors import ModelNotFound
from modelplex_router.local_backend import LocalProcessBackend
from modelplex_router.metrics import RouterMetrics
from modelplex_router.router import ModelRouter
from modelplex_router.settings import RouterSettings
from modelplex_spec import ConfigError, ModelplexConfig, parse_config

A = {"alias": "a", "Plain": {"model_id": "org/a"}}
B = {"alias": "b", "Plain": {"model_id": "org/b"}}
C = {"alias": "c", "Plain": {"model_id": "org/c"}}


async def test_apply_config_adds_removes_and_keeps_a_default_chosen_at_run_time() -> None:
    backend = LocalProcessBackend(["true"])
    router = ModelRouter(parse_config({"a": A, "b": B}), backend, RouterSettings(), RouterMetrics())
    try:
        coord_b = router.coordinators["b"]
        change = router.apply_config(parse_config({"b": {**B, "idle_timeout": 9}, "c": C}, "c"))
        assert list(change.added) == ["c"] and change.removed == ["a"] and list(change.changed) == ["b"]
        assert list(router.coordinators) == ["b", "c"] and router.default_id == "c"
        # The same coordinator (and so the same runtime) serves a changed entry.
        assert router.coordinators["b"] is coord_b and coord_b.entry.idle_timeout == 9
        assert router.lookup("a") is None and router.resolve("org/c").api_id == "c"
        with pytest.raises(ModelNotFound, match="Available models: default, b, c"):
            router.resolve("a")

        # Chosen through the API: a refresh with another configured default keeps it ...
        router.set_default("b")
        router.apply_config(parse_config({"b": B, "c": C}, "c"))
        assert router.default_id == "b"
        # ... until that model goes; then the config's default applies again, and is followed.
        router.apply_config(parse_config({"c": C, "a": A}, "c"))
        assert router.default_id == "c" and not router.default_from_api
        router.apply_config(parse_config({"c": C, "a": A}, "a"))
        assert router.default_id == "a"
    finally:
        await router.stop()
        await backend.close()


async def test_refresh_keeps_the_previous_models_when_the_source_fails() -> None:
    answers: list[ModelplexConfig | Exception] = [
        ConfigError(["two MultiModels use the API id 'a'"]),
        OSError("connection refused"),
        parse_config({"a": A, "c": C}),
    ]

    async def source() -> ModelplexConfig:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    backend = LocalProcessBackend(["true"])
    router = ModelRouter(parse_config({"a": A}), backend, RouterSettings(), RouterMetrics(), source)
    try:
        assert await router.refresh_catalog() is None
        assert await router.refresh_catalog() is None
        assert list(router.coordinators) == ["a"]
        change = await router.refresh_catalog()
        assert change is not None and list(change.added) == ["c"]
        assert list(router.coordinators) == ["a", "c"]
    finally:
        await router.stop()
        await backend.close()
