"""Shared fixtures: the real Fashion-MNIST package must be installed (scripts/install.sh does it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/federation.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "federation: starts real Flower processes (tens of seconds)")
    config.addinivalue_line("markers", "docker: builds images and runs a real Docker engine (minutes)")
