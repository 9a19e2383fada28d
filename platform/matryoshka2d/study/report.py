"""A finished study run -> paper-style tables, heatmaps, report.md, claims.md; expected results: record and check.

Everything is computed from the run dir alone (``study.json``, ``trials/*/{params.json, grid.csv, items.npz}``),
so ``reproduce.py --analyse RUN_DIR`` rewrites the outputs of any finished run and ``--check RUN_DIR`` compares
it with ``experiments/expected/<study>.yaml``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .. import storage
from ..errors import M2DError
from ..evaluate.grid import STS_AVG, GridResult, Row as GridRow
from .bootstrap import Component, replicates
from .spec import EXPECTED_DIR, Row, Study, expand_rows, load_study

VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass
class Trial:
    label: str
    seed: int | None
    path: Path
    grid: GridResult
    _items: dict | None = None

    @property
    def items(self) -> dict:
        if self._items is None:
            with np.load(self.path / storage.ITEMS) as data:
                self._items = {k: data[k] for k in data.files}
        return self._items


def collect(run_dir: Path) -> dict[str, list[Trial]]:
    """Finished trials by row label (one per training seed)."""
    out: dict[str, list[Trial]] = {}
    for folder in sorted((run_dir / storage.TRIALS).glob("*")):
        params, grid = folder / storage.PARAMS, folder / storage.GRID
        if not (params.is_file() and grid.is_file() and (folder / storage.ITEMS).is_file()):
            continue
        p = json.loads(params.read_text())
        out.setdefault(p["row"], []).append(Trial(p["row"], p.get("train.seed"), folder, GridResult.from_csv(grid)))
    return out


# -- tables ------------------------------------------------------------------------------------------------
def split_metric(metric: str) -> tuple[str, str]:
    dataset, _, name = metric.partition("/")
    return dataset, name


def row_cells(row: Row, trial: Trial, metric: str) -> dict[tuple[int, int], float]:
    """The cells a row provides in the tables: its whole grid, or its own layer / cell (separate models)."""
    ds, name = split_metric(metric)
    cells = {(r.layer, r.dim): r.value for r in trial.grid.rows if r.dataset == ds and r.metric == name}
    if row.own is None:
        return cells
    return {(l, d): v for (l, d), v in cells.items() if any(l == ol and od in (None, d) for ol, od in row.own)}


def table(rows: list[Row], trials: dict[str, list[Trial]], metric: str) -> dict[str, dict[tuple[int, int], list]]:
    """group -> cell -> values over seeds."""
    out: dict[str, dict[tuple[int, int], list]] = {}
    for row in rows:
        for trial in trials.get(row.label, []):
            for cell, value in row_cells(row, trial, metric).items():
                out.setdefault(row.group, {}).setdefault(cell, []).append(value)
    return out


def reference_dir(data_dir: str | None) -> Path | None:
    """``$M2D_REFERENCE_DIR``, else ``reference/`` beside the data dir (``../shared/reference``)."""
    env = os.environ.get("M2D_REFERENCE_DIR")
    if env:
        return Path(env)
    root = data_dir or os.environ.get("M2D_DATA_DIR")
    return Path(root).resolve().parent / "reference" if root else None


def seed_table(study: Study, ref_dir: Path | None) -> dict[str, dict[tuple[int, int], float]]:
    """The seed's published numbers for this study's rows (bert-base; its own layers and dims)."""
    spec = study.spec.get("seed_reference")
    if not spec or ref_dir is None or not (ref_dir / spec["file"]).is_file():
        return {}
    import csv

    with (ref_dir / spec["file"]).open() as fh:
        records = list(csv.DictReader(fh))
    out: dict[str, dict[tuple[int, int], float]] = {}
    for group, match in spec["rows"].items():
        for rec in records:
            if all(rec.get(k) == str(v) for k, v in match.items()):
                out.setdefault(group, {})[(int(rec["layer"]), int(rec["dim"]))] = float(rec[spec["value"]])
    return out


def markdown_table(values: dict[str, dict[tuple[int, int], float]], titles: dict[str, str], digits: int = 3) -> str:
    dims = sorted({d for cells in values.values() for _, d in cells})
    lines = ["| method | layer | " + " | ".join(str(d) for d in dims) + " |",
             "|---|---:|" + "---:|" * len(dims)]
    for group, cells in values.items():
        for layer in sorted({l for l, _ in cells}):
            vals = [cells.get((layer, d)) for d in dims]
            lines.append(f"| {titles.get(group, group)} | {layer} | "
                         + " | ".join("" if v is None else f"{v:.{digits}f}" for v in vals) + " |")
    return "\n".join(lines)


def write_tables(run_dir: Path, study: Study, rows: list[Row], trials) -> list[Path]:
    out_dir = run_dir / storage.TABLES
    out_dir.mkdir(exist_ok=True)
    written = []
    for metric in study.metrics:
        cells = table(rows, trials, metric)
        path = out_dir / f"{metric.replace('/', '_').replace('@', '')}.csv"
        with path.open("w") as fh:
            fh.write("method,layer,dim,mean,std,seeds\n")
            for group, by_cell in cells.items():
                for (layer, dim), values in sorted(by_cell.items()):
                    fh.write(f"{group},{layer},{dim},{np.mean(values):.6f},{np.std(values):.6f},{len(values)}\n")
        written.append(path)
        written += write_heatmaps(out_dir, metric, cells)
    return written


def write_heatmaps(out_dir: Path, metric: str, cells: dict) -> list[Path]:
    from ..evaluate.plots import heatmap, method_curves

    safe = metric.replace("/", "_").replace("@", "")
    means = {g: {c: float(np.mean(v)) for c, v in by.items()} for g, by in cells.items()}
    paths = [method_curves(means, metric, out_dir / f"methods_{safe}.png")]
    ds, name = split_metric(metric)
    for group, by_cell in cells.items():
        grid_rows = [GridRow(ds, "test", name, l, d, float(np.mean(v))) for (l, d), v in by_cell.items()]
        grid = GridResult(grid_rows, sorted({r.layer for r in grid_rows}), sorted({r.dim for r in grid_rows}))
        paths.append(heatmap(grid, ds, name, out_dir / f"heatmap_{safe}_{group}.png", title=f"{group}: {metric}"))
    return paths


# -- claims ------------------------------------------------------------------------------------------------
def select_cells(spec: str, cells: set[tuple[int, int]], own: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """``all``, ``sublayer`` (layer < the last), ``own`` (a separate model's own cells), ``dims<128``,
    ``dims>=128``, joined with ``_`` (``sublayer_dims>=128``)."""
    if not cells:
        return []
    last = max(l for l, _ in cells)
    chosen = set(cells)
    for part in spec.split("_"):
        if part == "all":
            continue
        elif part == "sublayer":
            chosen = {c for c in chosen if c[0] < last}
        elif part == "own":
            chosen &= own
        elif part.startswith("dims<"):
            chosen = {c for c in chosen if c[1] < int(part[5:])}
        elif part.startswith("dims>="):
            chosen = {c for c in chosen if c[1] >= int(part[6:])}
        else:
            raise M2DError(f"claims: unknown cell set {part!r} in {spec!r}; allowed all, sublayer, own, dims<N, dims>=N")
    return sorted(chosen)


def _own_cells(rows: list[Row], group: str, trials) -> set[tuple[int, int]]:
    own = set()
    for row in rows:
        if row.group == group and row.own:
            for layer, dim in row.own:
                if dim is None:  # a per-layer model trained at full width: its own cell is (l, H)
                    runs = trials.get(row.label, [])
                    dim = max(runs[0].grid.dims) if runs else None
                if dim is not None:
                    own.add((layer, dim))
    return own


def _components(metric: str, entries: list[tuple[Trial, int, int]]) -> tuple[list[Component], list[float]]:
    """Bootstrap components for a list of (trial, layer, dim) vectors of one metric."""
    ds, name = split_metric(metric)
    first = entries[0][0].items
    if ds == STS_AVG or f"{ds}/gold" in first:
        sets = sorted(k[:-5] for k in first if k.endswith("/gold")) if ds == STS_AVG else [ds]
        comps = [Component(np.stack([t.items[f"{s}/cosine/{l}/{d}"] for t, l, d in entries]), first[f"{s}/gold"])
                 for s in sets]
        return comps, [1 / len(sets)] * len(sets)
    return [Component(np.stack([t.items[f"{ds}/{name}/{l}/{d}"] for t, l, d in entries]))], [1.0]


def evaluate_claims(study: Study, rows: list[Row], trials, n_boot: int, seed: int = 0) -> list[dict]:
    metric = study.metric
    cells_of = table(rows, trials, metric)
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    results = []
    for claim in study.spec.get("claims") or []:
        a, b = claim["a"], claim["b"]
        if a not in cells_of or b not in cells_of:
            results.append({**claim, "verdict": "not run", "why": f"rows {a} and {b} are needed"})
            continue
        own = _own_cells(rows, a, trials)
        chosen = select_cells(claim.get("cells", "all"), set(cells_of[a]) & set(cells_of[b]), own)
        if not chosen:
            results.append({**claim, "verdict": "not run", "why": "no cell in common"})
            continue
        entries, index = [], {}  # one vector per (group, seed trial, cell)
        for group in (a, b):
            for cell in chosen:
                for row in by_group[group]:
                    for trial in trials.get(row.label, []):
                        if cell in row_cells(row, trial, metric):
                            index.setdefault((group, cell), []).append(len(entries))
                            entries.append((trial, *cell))
        comps, weights = _components(metric, entries)
        reps = replicates(comps, weights, n_boot, seed)  # [B + 1, V]

        def group_mean(group: str) -> np.ndarray:  # per replicate: mean over cells of the mean over seeds
            return np.mean([reps[:, index[(group, c)]].mean(axis=1) for c in chosen], axis=0)

        diff = group_mean(a) - group_mean(b)
        per_cell = [reps[0, index[(a, c)]].mean() - reps[0, index[(b, c)]].mean() for c in chosen]
        lo, hi = np.percentile(diff[1:], [2.5, 97.5])
        results.append({**claim, "metric": metric, "cells_used": len(chosen), "margin": float(diff[0]),
                        "ci": [float(lo), float(hi)], "wins": float(np.mean(np.array(per_cell) > 0)),
                        "a_mean": float(group_mean(a)[0]), "b_mean": float(group_mean(b)[0]),
                        "verdict": verdict(claim["expect"], lo, hi)})
    return results


def verdict(expect: str, lo: float, hi: float) -> str:
    """``greater``: a > b; ``not_less``: a >= b (a tie is inconclusive); ``not_greater``: a shows no gain."""
    if expect == "greater" or expect == "not_less":
        return "holds" if lo > 0 else "does not hold" if hi < 0 else "inconclusive"
    if expect == "not_greater":
        return "does not hold" if lo > 0 else "holds"
    raise M2DError(f"claims: unknown expect {expect!r}; allowed greater, not_less, not_greater")


def seed_margin(claim: dict, seed: dict) -> float | None:
    """The same comparison on the seed's published numbers, over its own cells (where it has both rows)."""
    a, b = seed.get(claim["a"]), seed.get(claim["b"])
    if not a or not b:
        return None
    own = {c for c in a} if claim.get("cells") == "own" else set()
    chosen = select_cells(claim.get("cells", "all"), set(a) & set(b), own)
    return float(np.mean([a[c] - b[c] for c in chosen])) if chosen else None


def claims_markdown(study: Study, results: list[dict], seed: dict, n_boot: int) -> str:
    lines = [f"# Claims of the seed study, checked: {study.name} study, scale {study.scale}", "",
             f"Metric {study.metric}; margin = mean over the claim's cells of (a - b); 95% paired bootstrap interval "
             f"over test items ({n_boot} resamples, every model on the same resample); wins = share of cells with "
             "a > b. The seed's margin is the same comparison on its published bert-base numbers.", "",
             "| claim | a vs b | cells | margin | 95% CI | wins | seed's margin | verdict |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for r in results:
        if "margin" not in r:
            lines.append(f"| {r['id']} {r['text']} | {r['a']} vs {r['b']} | {r.get('cells', 'all')} | | | | | "
                         f"{r['verdict']} ({r['why']}) |")
            continue
        sm = seed_margin(r, seed)
        lines.append(f"| {r['id']} {r['text']} | {r['a']} vs {r['b']} | {r.get('cells', 'all')} ({r['cells_used']}) | "
                     f"{r['margin']:+.4f} | [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {r['wins']:.0%} | "
                     f"{'' if sm is None else f'{sm:+.4f}'} | **{r['verdict']}** |")
    return "\n".join(lines) + "\n"


def report_markdown(study: Study, rows: list[Row], trials, seed: dict, describe: dict) -> str:
    titles = {}
    for row in rows:
        titles.setdefault(row.group, row.title)
    lines = [f"# Reproduction: {study.name} study, scale {study.scale}", "",
             f"Study file `{Path(describe.get('study_file', study.path)).name}`, {len(trials)} trained rows x "
             f"{describe.get('seeds', 1)} seed(s); overrides: {describe.get('sets') or 'none'}.", ""]
    for metric in study.metrics:
        cells = table(rows, trials, metric)
        means = {g: {c: float(np.mean(v)) for c, v in by.items()} for g, by in cells.items()}
        lines += [f"## {metric} (this run)", "", markdown_table(means, titles, 4), ""]
    spec = study.spec.get("seed_reference")
    if seed and spec:
        lines += [f"## The seed's published numbers ({spec['file']}: bert-base-uncased, {spec['value']})", "",
                  "Compare shapes and orderings, not values: a different model, data and budget.", "",
                  markdown_table(seed, titles, 3), ""]
    return "\n".join(lines)


def analyse(run_dir: Path, study: Study, rows: list[Row], n_boot: int = 1000, trials=None) -> list[Path]:
    """Write tables/*.csv, heatmaps, report.md, claims.md (+ claims.json) for a finished run; returns the paths."""
    trials = collect(run_dir) if trials is None else trials
    if not trials:
        raise M2DError(f"{run_dir}: no finished trial (trials/*/grid.csv with items.npz)")
    describe = json.loads((run_dir / storage.STUDY).read_text()) if (run_dir / storage.STUDY).is_file() else {}
    written = write_tables(run_dir, study, rows, trials)
    seed = seed_table(study, reference_dir((study.base().get("data") or {}).get("data_dir")))
    results = evaluate_claims(study, rows, trials, n_boot)
    out = run_dir / storage.TABLES
    (out / storage.CLAIMS).write_text(json.dumps(results, indent=2))
    (out / "claims.md").write_text(claims_markdown(study, results, seed, n_boot))
    (out / storage.REPORT).write_text(report_markdown(study, rows, trials, seed, describe) + "\n"
                                   + claims_markdown(study, results, seed, n_boot))
    return written + [out / storage.CLAIMS, out / "claims.md", out / storage.REPORT]


# -- run dirs: analyse, expected results, check ------------------------------------------------------------
def study_of(run_dir: Path) -> tuple[Study, list[Row], dict]:
    path = run_dir / storage.STUDY
    if not path.is_file():
        raise M2DError(f"{run_dir}: not a finished study run (no study.json)")
    d = json.loads(path.read_text())
    study = load_study(d["study_file"], d["scale"], d.get("data"), d.get("sets"))
    return study, expand_rows(study), d


def analyse_run_dir(run_dir: Path, args) -> int:
    study, rows, _ = study_of(run_dir)
    for path in analyse(run_dir, study, rows, args.bootstrap):
        if path.suffix == ".md":
            print(f"reproduce: wrote {path}")
    return 0


def expected_path(study: Study) -> Path:
    return EXPECTED_DIR / f"{study.name}.yaml"


def measured(study: Study, rows: list[Row], trials) -> dict:
    """group -> metric -> {"L<layer>": [value per dim or None]} and the dims, rounded to 4 digits."""
    out: dict = {}
    dims_all: set[int] = set()
    for metric in study.metrics:
        for group, by_cell in table(rows, trials, metric).items():
            dims_all |= {d for _, d in by_cell}
            out.setdefault(group, {})[metric] = by_cell
    dims = sorted(dims_all)
    cells = {g: {m: {f"L{l}": [None if (l, d) not in c else round(float(np.mean(c[(l, d)])), 4) for d in dims]
                     for l in sorted({l for l, _ in c})} for m, c in ms.items()} for g, ms in out.items()}
    return {"dims": dims, "cells": cells}


def write_expected(run_dir: Path, args) -> int:
    from ..tracking import Tag, data_checksums
    from .spec import row_config

    study, rows, d = study_of(run_dir)
    trials = collect(run_dir)
    path = expected_path(study)
    registry = yaml.safe_load(path.read_text()) if path.is_file() else {}
    command = f"python experiments/reproduce.py --study {study.name} --scale {study.scale}" + \
        (f" --data {study.data}" if study.data else "") + "".join(f" --set {s}" for s in d.get("sets") or [])
    cfg = row_config(study, rows[0])
    entry = {"command": command, "model": cfg.model.name if study.scale != "smoke" else "tiny-bert (random 4 x 96, seed 0)",
             "data": {k.removeprefix(Tag.DATA): v for k, v in sorted(data_checksums(cfg).items())},
             "config_hash": d["config_hash"], "seeds": d.get("seeds", 1),
             "tolerance": 0.005 if study.scale == "smoke" else 0.01, **measured(study, rows, trials)}
    registry[study.scale] = entry
    header = (f"# Expected results of the {study.name} study, per scale: written by `reproduce.py --write-expected "
              "RUN_DIR`,\n# checked by `reproduce.py --check RUN_DIR` (every cell within its tolerance). Values are "
              "means over seeds.\n")
    path.write_text(header + yaml.safe_dump(registry, sort_keys=False, width=120, default_flow_style=None))
    print(f"reproduce: recorded {study.scale} of {study.name} in {path}")
    return 0


def check_run_dir(run_dir: Path, args) -> int:
    """Compare a finished run with its scale's expected entry; exit 1 naming every moved or missing cell."""
    study, rows, d = study_of(run_dir)
    path = expected_path(study)
    registry = yaml.safe_load(path.read_text()) if path.is_file() else {}
    if study.scale not in (registry or {}):
        raise M2DError(f"--check: {path} has no {study.scale} entry; record one with --write-expected {run_dir}")
    entry = registry[study.scale]
    got = measured(study, rows, collect(run_dir))
    tol = float(entry.get("tolerance", 0.01))
    moved, compared = [], 0
    for group, metrics in entry["cells"].items():
        for metric, layers in metrics.items():
            for layer, values in layers.items():
                for dim, want in zip(entry["dims"], values):
                    if want is None:
                        continue
                    have = _lookup(got, group, metric, layer, dim)
                    compared += 1
                    if have is None or math.isnan(have) or abs(have - want) > tol:
                        moved.append(f"{group} {metric} {layer} d{dim}: expected {want:.4f}, got "
                                     f"{'missing' if have is None else f'{have:.4f}'}")
    changed = sorted(k for k, v in (entry.get("config_hash") or {}).items() if d["config_hash"].get(k) != v)
    if changed:
        print(f"reproduce: note: the config of {', '.join(changed)} differs from the recorded one")
    if moved:
        print(f"reproduce: {len(moved)} of {compared} cells moved beyond +-{tol:g} from {path.name} ({study.scale}):")
        for line in moved:
            print(f"  {line}")
        return 1
    print(f"reproduce: all {compared} cells within +-{tol:g} of {path.name} ({study.scale})")
    return 0


def _lookup(got: dict, group: str, metric: str, layer: str, dim: int) -> float | None:
    try:
        values = got["cells"][group][metric][layer]
        value = values[got["dims"].index(dim)]
    except (KeyError, ValueError):
        return None
    return value


# -- any two trained runs ------------------------------------------------------------------------------------
def paired_difference(a: Path, b: Path, metric: str, cells: str = "sublayer", n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """Mean over the chosen cells of (run a - run b) for two trial dirs (``grid.csv`` + ``items.npz``), with a 95%
    paired bootstrap interval over test items."""
    for path in (a, b):
        if not ((Path(path) / storage.GRID).is_file() and (Path(path) / storage.ITEMS).is_file()):
            raise M2DError(f"{path}: not a finished trial dir (grid.csv and items.npz)")
    ta, tb = (Trial("a", None, Path(p), GridResult.from_csv(Path(p) / storage.GRID)) for p in (a, b))
    whole = Row("x", "x", "", {}, "")
    ca, cb = row_cells(whole, ta, metric), row_cells(whole, tb, metric)
    chosen = select_cells(cells, set(ca) & set(cb), set())
    if not chosen:
        raise M2DError(f"{a} and {b}: no {metric} cell in common for {cells!r}")
    entries = [(ta, *c) for c in chosen] + [(tb, *c) for c in chosen]
    comps, weights = _components(metric, entries)
    reps = replicates(comps, weights, n_boot, seed)
    n = len(chosen)
    diff = reps[:, :n].mean(axis=1) - reps[:, n:].mean(axis=1)
    lo, hi = np.percentile(diff[1:], [2.5, 97.5])
    return {"a_mean": float(reps[0, :n].mean()), "b_mean": float(reps[0, n:].mean()), "margin": float(diff[0]),
            "ci": [float(lo), float(hi)], "cells": n}
