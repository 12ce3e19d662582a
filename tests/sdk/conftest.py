"""The fake router fixture for the SDK tests."""

from sdk.fake_router import fake_router

__all__ = ["fake_router"]
