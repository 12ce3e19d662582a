from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

# The emulator harness (resource declarations, the operator runner) lives with the operator tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kopf_harness import DEPLOYMENTS, MM, declare_resources, eventually, running_operator
from kube_harness import MODELS, NS, multimodel

from helpers.ports import free_port


@pytest.fixture()
def cluster(kmock: Any) -> Any:
    declare_resources(kmock)
    return kmock


@pytest.fixture()
async def deployed(cluster: Any) -> AsyncIterator[dict[str, int]]:
    """The operator has turned the MultiModel into Deployments; ports for their runtimes are chosen."""
    cluster.objects[MM, NS, "demo"] = multimodel("demo", MODELS, defaultModelId="tiny")
    async with running_operator(str(cluster.url)):
        await eventually(lambda: all((DEPLOYMENTS, NS, f"demo-{m}") in cluster.objects for m in MODELS))
        yield {f"demo-{m}": free_port() for m in MODELS}
