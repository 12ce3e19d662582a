from __future__ import annotations

from pathlib import Path

import pytest
from helm_tools import ensure_tools


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_tools()["helm"]
