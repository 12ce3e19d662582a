"""Tests of the modelplex client SDK (a package so tests/cli can reuse its fake router)."""
