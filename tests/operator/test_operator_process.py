"""`python -m modelplex_operator` as a real process: settings from env, JSON logs, liveness endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx
import pytest
from kopf_harness import DEPLOYMENTS, MM, eventually

from helpers.ports import free_port

pytestmark = pytest.mark.integration
NS = "team-a"



async def test_operator_process_reconciles_and_reports_liveness(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = {
        "apiVersion": "modelplex.dev/v1alpha1", "kind": "MultiModel",
        "metadata": {"name": "demo", "namespace": NS, "uid": "u", "generation": 1, "resourceVersion": "1"},
        "spec": {"models": {"m": {"Embedding": {"model_id": "org/e"}}}},
    }
    port = free_port()
    env = {
        **os.environ,
        "MODELPLEX_OPERATOR_KUBE_API_URL": str(cluster.url),
        "MODELPLEX_OPERATOR_NAMESPACES": NS,
        "MODELPLEX_OPERATOR_RUNTIME_IMAGE": "registry.local/runtime:test",
        "MODELPLEX_OPERATOR_LIVENESS_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelplex_operator", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await eventually(lambda: (DEPLOYMENTS, NS, "demo-m") in cluster.objects)
        image = cluster.objects[DEPLOYMENTS, NS, "demo-m"].raw["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.local/runtime:test"

        async def alive() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        for _ in range(100):
            if await alive():
                break
            await asyncio.sleep(0.1)
        assert await alive()
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = [line for line in out.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) == len(lines), "every log line is one JSON object"
    assert any("applied create Deployment demo-m" in r.get("message", "") for r in records)
