"""Reusable test helpers (process management for integration tests)."""
