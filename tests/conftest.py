"""Shared fixtures: the real data directory (read-only) used by loader tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Absolute, so subprocesses and Ray jobs started from other working directories see the same data.
os.environ["M2D_DATA_DIR"] = str(Path(os.environ.get("M2D_DATA_DIR") or Path(__file__).parents[1].parent / "shared"
                                      / "data").resolve())
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$M2D_DATA_DIR`` or ``<repo>/../shared/data``; missing real data is a failure, never a skip."""
    path = Path(os.environ["M2D_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"real data dir {path} does not exist; set M2D_DATA_DIR to the shared data folder")
    return path
