"""Shared test helpers: keep this small (other suites add fixtures in their own folders)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# make `model` (tests/model: the reference model and the small catalog) importable
# however pytest is started
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from model import small_catalog as _small_catalog  # noqa: E402


@pytest.fixture
def small_catalog():
    """A six-SKU catalog built by hand with NumPy (see tests/model/__init__.py)."""
    return _small_catalog()
