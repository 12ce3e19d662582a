from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.harness import RouterProcess, start_router


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Start routers (``start_router`` arguments); each is stopped, and checked for orphans, at teardown."""
    started: list[RouterProcess] = []

    def make(config: dict[str, Any] | str, **kwargs: Any) -> RouterProcess:
        router = start_router(tmp_path / f"router{len(started)}", config, **kwargs)
        started.append(router)
        return router

    yield make
    for router in started:
        router.stop()
