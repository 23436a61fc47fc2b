"""Suite-wide fixtures."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults():
    """A CLI test configures structlog; later tests expect its defaults (print to stdout)."""
    yield
    structlog.reset_defaults()
