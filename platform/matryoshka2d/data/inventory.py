"""``m2d data``: what a data dir holds of each named dataset, what is missing and where to get it, and checksums.

Splits that read the same files (``snli`` dev/test/all) are one row. The files are the registry's own (the ones a
run reads and tracks), hashed with the same helper as run tracking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import M2DError
from ._io import sha256_prefix
from .origins import ORIGINS
from .registry import REGISTRY


def inventory(root: Path) -> dict[str, Any]:
    """``{"data_dir", "datasets": [row...], "other": [...], "present", "rows"}``; a row is one dataset and the splits
    that read the same files: present (each file's bytes and sha256[:16]) or missing (the problem and the origin)."""
    digests: dict[Path, str] = {}
    rows = []
    for name, entry in REGISTRY.items():
        groups: dict[tuple[tuple[Path, ...], str | None], list[str]] = {}
        for split in entry.splits:
            try:
                key: tuple[tuple[Path, ...], str | None] = (tuple(entry.files(root, split)), None)
            except M2DError as err:
                key = ((), str(err))
            groups.setdefault(key, []).append(split)
        for (files, problem), splits in groups.items():
            rows.append(_row(root, name, entry.kind, splits, files, problem, digests))
    homes = {o.folder for o in ORIGINS.values()}
    other = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if p.name not in homes)
    return {"data_dir": str(root), "datasets": rows, "other": other,
            "present": sum(r["present"] for r in rows), "rows": len(rows)}


def _row(root: Path, name: str, kind: str, splits: list[str], files: tuple[Path, ...], problem: str | None,
         digests: dict[Path, str]) -> dict[str, Any]:
    listed = []
    for path in files:
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        if path.is_file():
            digests.setdefault(path, sha256_prefix(path))
            listed.append({"path": rel, "bytes": path.stat().st_size, "sha256": digests[path]})
        else:
            listed.append({"path": rel, "missing": True})
            problem = problem or f"{rel} not found"
    origin = ORIGINS[name]
    row = {"dataset": name, "kind": kind, "splits": splits, "present": problem is None, "files": listed,
           "bytes": sum(f.get("bytes", 0) for f in listed), "source": origin.source, "url": origin.url,
           "license": origin.license}
    if problem is not None:
        row["problem"] = problem
        row["get"] = f"{origin.url}; {origin.get}; license: {origin.license}"
    return row


def format_inventory(report: dict[str, Any]) -> str:
    """Text for people: per row a status line, then its files (present) or where to get it (missing)."""
    lines = [f"data dir: {report['data_dir']}"]
    for row in report["datasets"]:
        head = f"{row['dataset']} ({row['kind']}) {', '.join(row['splits'])}:"
        if row["present"]:
            count = len(row["files"])
            lines.append(f"{head} present, {count} file{'s' if count != 1 else ''}, {row['bytes']:,} bytes")
            lines += [f"  {f['path']}  {f['bytes']:,}  {f['sha256']}" for f in row["files"]]
        else:
            lines.append(f"{head} MISSING: {row['problem']}")
            lines.append(f"  get: {row['get']}")
    if report["other"]:
        lines.append(f"not read by any named dataset: {', '.join(report['other'])}")
    lines.append(f"{report['present']} of {report['rows']} present")
    return "\n".join(lines)
