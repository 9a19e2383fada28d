"""Several runs' layer x dim grids side by side: load them, align them, and write the comparison.

A source is an ``m2d train``/``m2d eval`` output dir (or its ``grid.csv``), an MLflow run id (its logged
``grid.csv``), or a sweep's parent run id (every trial, in trial order). The comparison of each dataset x metric
is the same everywhere (``m2d compare``, ``m2d report``, a sweep's parent run): every run's grid as small
multiples on one colour scale, each run minus a baseline, the best run per cell, a leaderboard, and one CSV with
every cell of every run side by side.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import storage
from ..errors import M2DError
from ..evaluate.grid import GridResult, summarize
from ..tracking import Tag


@dataclass
class Entry:
    """One run in a comparison."""

    label: str
    grid: GridResult
    source: str  # the folder or MLflow run id it came from
    run_id: str | None = None
    method: str = ""
    status: str = ""
    params: dict[str, str] = field(default_factory=dict)


# -- loading ----------------------------------------------------------------------------------------------
def load(sources: Sequence[str], tracking_uri: str | None = None, cache: Path | None = None) -> list[Entry]:
    """Entries for ``sources`` (folders, grid files, run ids, sweep parent ids), labels made unique, checked to be
    comparable (:func:`check_entries`). Run ids are looked up read-only: a missing store is refused, never created;
    their grids are downloaded to ``cache`` (default: a temporary folder)."""
    import tempfile

    entries: list[Entry] = []
    mlf = None
    with tempfile.TemporaryDirectory(prefix="m2d-compare-") as tmp:  # the grids are read into memory
        for source in sources:
            path = Path(source).expanduser()
            if path.exists():
                entries.append(from_path(path))
                continue
            if not re.fullmatch(r"[0-9a-f]{32}", source):
                raise M2DError(f"{source}: neither a run folder / grid.csv nor an MLflow run id (32 hex digits)")
            if mlf is None:
                from .. import tracking

                mlf = tracking.read_only_client(tracking_uri)
            entries += from_mlflow(mlf, source, Path(cache or tmp))
    if not entries:
        raise M2DError("compare: no runs to compare")
    return check_entries(unique_labels(entries))


def check_entries(entries: list[Entry]) -> list[Entry]:
    """Runs that can be compared: none whose every value is NaN (it would vanish from every figure), and, for two or
    more, at least one (dataset, metric) and one (layer, dim) cell with a value in every run (else every difference
    to the baseline is NaN)."""
    for e in entries:
        if not any(math.isfinite(r.value) for r in e.grid.rows):
            raise M2DError(f"{e.label} ({e.source}): every value of its grid is NaN; nothing to compare or pick")
    if len(entries) < 2:
        return entries
    cells = [{(r.dataset, r.metric, r.layer, r.dim) for r in e.grid.rows if math.isfinite(r.value)} for e in entries]
    pairs_of = [{c[:2] for c in each} for each in cells]
    shared = set.intersection(*pairs_of)
    if not shared:
        raise M2DError("compare: the runs share no dataset/metric with a value: " + "; ".join(
            f"{e.label} has {_names(p)}" for e, p in list(zip(entries, pairs_of))[:4]))
    if not set.intersection(*cells):
        ds, metric = sorted(shared)[0]
        raise M2DError(f"compare: the runs share no (layer, dim) cell with a value in {ds}/{metric}: " + "; ".join(
            f"{e.label} has {_cells_of(c, ds, metric)}" for e, c in list(zip(entries, cells))[:4]))
    return entries


def _names(found: set) -> str:
    names = sorted(f"{ds}/{m}" for ds, m in found)
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def _cells_of(cells: set, ds: str, metric: str) -> str:
    found = sorted((l, d) for d_, m, l, d in cells if (d_, m) == (ds, metric))
    return " ".join(f"L{l}D{d}" for l, d in found[:6]) + (" ..." if len(found) > 6 else "") if found else "none"


def from_path(path: Path) -> Entry:
    grid_file, status = (path / storage.GRID, "") if path.is_dir() else (path, "")
    if path.is_dir() and not grid_file.is_file() and (path / storage.STAGE / storage.GRID).is_file():
        grid_file, status = path / storage.STAGE / storage.GRID, "unfinished"  # a trial's latest evaluation
    if not grid_file.is_file():
        raise M2DError(f"{path}: no grid.csv (give an m2d train / m2d eval output dir or a grid.csv)")
    folder = path if path.is_dir() else grid_file.parent
    params_file = folder / storage.PARAMS  # a sweep trial dir: its study row / sampled labels
    params = storage.read_params(params_file) if params_file.is_file() else {}
    label = params.get("row") or folder.name
    return Entry(label, GridResult.from_csv(grid_file), str(folder), status=status, params=params)


def from_mlflow(mlf, run_id: str, cache: Path) -> list[Entry]:
    """The run's grid, or, for a sweep's parent, every trial's (in trial order; trials with no grid yet skipped)."""
    from mlflow.exceptions import MlflowException

    from .. import tracking

    try:
        run = mlf.get_run(run_id)
    except MlflowException:
        raise M2DError(f"{run_id}: no such MLflow run in {mlf.tracking_uri}") from None
    if run.data.tags.get(Tag.KIND) != "sweep":
        entry = entry_of_run(mlf, run, cache)
        if entry is None:
            raise M2DError(f"{run_id}: the run has no grid.csv artifact (it has not evaluated yet)")
        return [entry]
    trials = sorted(tracking.children(mlf, run.info.experiment_id, run_id), key=trial_order)
    entries = [e for e in (entry_of_run(mlf, t, cache) for t in trials) if e is not None]
    if not entries:
        raise M2DError(f"{run_id}: none of the sweep's {len(trials)} trials has a grid yet")
    return entries


def entry_of_run(mlf, run, cache: Path) -> Entry | None:
    run_id = run.info.run_id
    if storage.GRID not in {a.path for a in mlf.list_artifacts(run_id)}:
        return None
    local = Path(mlf.download_artifacts(run_id, storage.GRID, str(Path(cache) / run_id)))
    params = {k.removeprefix("sweep."): v for k, v in run.data.params.items() if k.startswith("sweep.")
              and k not in ("sweep.backend", "sweep.workers")}
    status = run.info.status + (" (stopped early)" if run.data.tags.get(Tag.STOPPED_EARLY) else "")
    label = params.get("row") or run.info.run_name or run_id[:8]
    return Entry(label, GridResult.from_csv(local), run_id, run_id, run.data.tags.get(Tag.METHOD, ""), status,
                 params)


def trial_order(run) -> tuple:
    """When the trial's run was created (Tune starts trials in the order it creates them; searcher trial ids are
    random), then Tune's trial index where the id has one (``<hash>_<index>``)."""
    found = re.search(r"_(\d+)$", run.data.tags.get(Tag.TRIAL, ""))
    return (run.info.start_time or 0, int(found.group(1)) if found else 0)


def unique_labels(entries: list[Entry]) -> list[Entry]:
    seen: dict[str, int] = {}
    for e in entries:
        n = seen[e.label] = seen.get(e.label, 0) + 1
        if n > 1:
            e.label = f"{e.label} ({n})"
    return entries


def baseline_index(entries: list[Entry], wanted: str | None = None, method: str | None = None) -> int:
    """``wanted`` (a label, run id, its prefix, or a trial id), else the first run of ``method``, else the first."""
    if wanted:
        for i, e in enumerate(entries):
            if wanted in (e.label, e.source, e.run_id, e.params.get("trial_id")) or (
                    e.run_id and len(wanted) >= 6 and e.run_id.startswith(wanted)) or e.label.startswith(f"{wanted} "):
                return i
        raise M2DError(f"--baseline: {wanted!r} is none of the compared runs ({', '.join(e.label for e in entries)})")
    if method:
        for i, e in enumerate(entries):
            if e.method == method:
                return i
    return 0


# -- aligning and ranking ---------------------------------------------------------------------------------
def pairs(entries: list[Entry]) -> list[tuple[str, str]]:
    """Every (dataset, metric) of any run, in first-seen order."""
    out: dict[tuple[str, str], None] = {}
    for e in entries:
        for ds in e.grid.datasets():
            for metric in e.grid.metrics(ds):
                out[(ds, metric)] = None
    return list(out)


def panels(entries: list[Entry], ds: str, metric: str) -> tuple[list[int], list[int], dict[str, np.ndarray]]:
    """One [layers, dims] matrix per run on the union of their layers and dims (NaN where a run has no cell)."""
    cells = {e.label: {(r.layer, r.dim): r.value for r in e.grid.rows if r.dataset == ds and r.metric == metric}
             for e in entries}
    layers = sorted({l for c in cells.values() for l, _ in c})
    dims = sorted({d for c in cells.values() for _, d in c})
    out = {}
    for label, by_cell in cells.items():
        m = np.full((len(layers), len(dims)), np.nan)
        for (l, d), v in by_cell.items():
            m[layers.index(l), dims.index(d)] = v
        out[label] = m
    return layers, dims, out


def best_per_cell(mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(index of the best run per cell, -1 where no run has it; its margin over the runner-up, 0 if alone)."""
    stack = np.stack(mats)
    filled = np.where(np.isfinite(stack), stack, -np.inf)
    winner = filled.argmax(0)
    top = np.take_along_axis(filled, winner[None], 0)[0]
    runner_up = np.sort(filled, 0)[-2] if len(mats) > 1 else top
    margin = np.where(np.isfinite(runner_up), top - runner_up, 0.0)
    winner = np.where(np.isfinite(top), winner, -1)
    return winner, np.where(winner >= 0, margin, np.nan)


def leaderboard(entries: list[Entry], ds: str, metric: str, baseline: int) -> list[dict]:
    """One row per run: its summaries, the cells it wins, and its mean difference to the baseline over shared cells;
    best ``sublayer_mean`` first (the cells 2D training is for)."""
    layers, dims, mats = panels(entries, ds, metric)
    labels = list(mats)
    winner, _ = best_per_cell(list(mats.values()))
    base = mats[labels[baseline]]
    rows = []
    for k, e in enumerate(entries):
        m = mats[e.label]
        if not np.isfinite(m).any():
            continue
        sums = summarize(GridResult([r for r in e.grid.rows if r.dataset == ds and r.metric == metric], [], []))
        s = sums[ds][metric]
        shared = np.isfinite(m) & np.isfinite(base)
        rows.append({"run": e.label, "status": e.status, "grid_mean": s["grid_mean"],
                     "sublayer_mean": s["sublayer_mean"], "full": s["full"], "worst_cell": s["worst_cell"],
                     "cells_won": int((winner == k).sum()), "cells": int(np.isfinite(m).sum()),
                     "vs_baseline": float((m - base)[shared].mean()) if shared.any() else math.nan,
                     "run_id": e.run_id or "", "source": e.source})
    key = lambda r: (-r["sublayer_mean"] if math.isfinite(r["sublayer_mean"]) else math.inf, -r["grid_mean"])  # noqa: E731
    return sorted(rows, key=key)


# -- writing ----------------------------------------------------------------------------------------------
def safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in text)


FIGURES = ("runs", "vs_baseline", "best_run")


def write(entries: list[Entry], out_dir: Path, baseline: int = 0) -> dict[str, list]:
    """Per dataset x metric: ``<ds>_<metric>_<figure>.png`` for each of :data:`FIGURES` and
    ``leaderboard_<ds>_<metric>.csv``; plus ``cells.csv`` (every cell, one column per run).
    Returns {"figures": [(dataset, metric, figure, path)], "tables": [path], "leaderboards": [(ds, metric, rows)]}."""
    from ..evaluate import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = entries[baseline].label
    figures, tables, boards = [], [write_cells(entries, out_dir / "cells.csv")], []
    for ds, metric in pairs(entries):
        layers, dims, mats = panels(entries, ds, metric)
        mats = {label: m for label, m in mats.items() if np.isfinite(m).any()}
        if not mats:
            continue
        stem, title = f"{safe(ds)}_{safe(metric)}", f"{ds} {metric}"
        path = lambda kind: out_dir / f"{stem}_{kind}.png"  # noqa: E731
        figures.append((ds, metric, "runs", plots.small_multiples(mats, layers, dims, title, path("runs"))))
        if base in mats:
            figures.append((ds, metric, "vs_baseline", plots.difference_grids(mats, base, layers, dims, title,
                                                                              path("vs_baseline"))))
        winner, margin = best_per_cell(list(mats.values()))
        figures.append((ds, metric, "best_run", plots.best_run_map(winner, margin, list(mats), layers, dims, title,
                                                                   path("best_run"))))
        rows = leaderboard(entries, ds, metric, baseline)
        boards.append((ds, metric, rows))
        tables.append(write_rows(rows, out_dir / f"leaderboard_{stem}.csv"))
    return {"figures": figures, "tables": tables, "leaderboards": boards}


def run(sources: Sequence[str] | Sequence[Entry], out_dir: Path, baseline: str | None = None,
        tracking_uri: str | None = None, method: str | None = None) -> tuple[list[Entry], int, dict[str, list]]:
    """The whole comparison: the runs (:func:`load`ed from ``sources``, or given as entries), the baseline
    (:func:`baseline_index` of ``baseline`` / ``method``) and everything :func:`write` writes to ``out_dir``, which
    is created only once every check has passed. Returns (entries, baseline index, what was written)."""
    entries = list(sources) if sources and isinstance(sources[0], Entry) else load(sources, tracking_uri)
    base = baseline_index(entries, baseline, method)
    return entries, base, write(entries, Path(out_dir), base)


def write_cells(entries: list[Entry], path: Path) -> Path:
    """``dataset,metric,layer,dim,<run 1>,<run 2>,...``: every cell of every run, empty where a run lacks it."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "metric", "layer", "dim", *(e.label for e in entries)])
        for ds, metric in pairs(entries):
            layers, dims, mats = panels(entries, ds, metric)
            for i, layer in enumerate(layers):
                for j, dim in enumerate(dims):
                    w.writerow([ds, metric, layer, dim, *(repr(float(m[i, j])) if np.isfinite(m[i, j]) else ""
                                                          for m in mats.values())])
    return Path(path)


def write_rows(rows: list[dict], path: Path) -> Path:
    with Path(path).open("w", newline="") as fh:
        if rows:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return Path(path)


def format_leaderboard(rows: list[dict], title: str) -> str:
    lines = [title, f"{'run':<36} {'sublayer':>9} {'grid':>8} {'full':>8} {'worst':>8} {'won':>5} {'vs base':>8}"]
    for r in rows:
        lines.append(f"{r['run'][:36]:<36} {r['sublayer_mean']:9.4f} {r['grid_mean']:8.4f} {r['full']:8.4f} "
                     f"{r['worst_cell']:8.4f} {r['cells_won']:>5} {r['vs_baseline']:+8.4f}")
    return "\n".join(lines)
