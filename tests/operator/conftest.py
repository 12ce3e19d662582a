from __future__ import annotations

from typing import Any

import pytest
from kopf_harness import declare_resources


@pytest.fixture()
def cluster(kmock: Any) -> Any:
    declare_resources(kmock)
    return kmock
