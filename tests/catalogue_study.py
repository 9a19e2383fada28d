"""Bad-input rows: m2d reproduce and m2d sweep: broken studies, run folders, expected files, state."""

from __future__ import annotations

from pathlib import Path

from catalogue import R  # noqa: F401 - the rows' constructor

CASES: list = []


def fixtures(root: Path, ctx: dict) -> dict:
    """Write this area's broken files under ``root``; returns placeholders for the rows and ``protected``: the files
    no refusal may change."""
    root.mkdir(parents=True)
    return {"protected": []}
