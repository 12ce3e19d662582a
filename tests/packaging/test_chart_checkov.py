"""checkov over the rendered chart: no failed check; each skipped one is a documented decision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from checkov_tool import checkov_env, ensure_checkov
from test_chart import CHART

# The decisions annotated on the Deployments (checkov.io/skipN) and explained in values.yaml.
JUSTIFIED = {"CKV_K8S_11", "CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_38"}


@pytest.mark.parametrize(
    "sets",
    [(), ("auth.existingSecret=keys", "auth.required=true", "router.ingress.enabled=true")],
    ids=["defaults", "auth+ingress"],
)
def test_checkov_finds_nothing_unjustified(helm: Path, tmp_path: Path, sets: tuple[str, ...]) -> None:
    cmd = [str(helm), "template", "mp", str(CHART), "--namespace", "modelplex"]
    for s in sets:
        cmd += ["--set", s]
    (tmp_path / "chart.yaml").write_text(
        subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    )
    result = subprocess.run(
        [str(ensure_checkov()), "-d", str(tmp_path), "--framework", "kubernetes", "-o", "json"],
        capture_output=True,
        text=True,
        env=checkov_env(),
        timeout=300,
    )
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
    assert failed == [], failed
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["summary"]["passed"] > 100 and report["summary"]["failed"] == 0
    skipped = {c["check_id"] for c in results.get("skipped_checks", [])}
    assert skipped <= JUSTIFIED
    values = (CHART / "values.yaml").read_text()
    assert all(check in values for check in skipped)
