"""Tests of the modelplex CLI."""
