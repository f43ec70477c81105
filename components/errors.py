"""Errors the components raise that the CLI reports in one line; importing this module costs nothing (no TFX)."""

from __future__ import annotations


class DataValidationError(RuntimeError):
    """Raised when validated data has anomalies against the curated schema."""
