"""Shared fixtures: the real data directory (read-only) used by loader tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$M2D_DATA_DIR`` or ``<repo>/../shared/data``; missing real data is a failure, never a skip."""
    path = Path(os.environ.get("M2D_DATA_DIR") or Path(__file__).parents[1].parent / "shared" / "data")
    if not path.is_dir():
        pytest.fail(f"real data dir {path} does not exist; set M2D_DATA_DIR to the shared data folder")
    return path
