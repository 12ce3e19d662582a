"""The fake router fixture (shared with the SDK tests) for the chat command's tests."""

from sdk.fake_router import fake_router

__all__ = ["fake_router"]
