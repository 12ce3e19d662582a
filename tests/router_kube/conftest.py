from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The emulator harness (resource declarations, the operator runner) lives with the operator tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kopf_harness import declare_resources


@pytest.fixture()
def cluster(kmock: Any) -> Any:
    declare_resources(kmock)
    return kmock
