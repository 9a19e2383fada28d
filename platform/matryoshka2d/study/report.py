"""A finished study run -> paper-style tables, heatmaps, report.md, claims.md; expected results: record and check.

Everything is computed from the run dir alone (``study.json``, ``trials/*/{params.json, grid.csv, items.npz}``),
so ``reproduce.py --analyse RUN_DIR`` rewrites the outputs of any finished run and ``--check RUN_DIR`` compares
it with ``experiments/expected/<study>.yaml`` (or ``--expected FILE``). Each file kind has one reader that checks its
shape (here :func:`read_study_json`, :func:`collect` and :func:`read_expected`; ``claims.json`` is read back only by
the report page, ``choose.page.claim_rows``), and nothing is tabulated, recorded or checked from part of a study
(:func:`finished`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .. import storage
from ..config import load_yaml
from ..errors import M2DError
from ..evaluate.grid import STS_AVG, GridResult, Row as GridRow
from .bootstrap import Component, replicates
from .spec import EXPECTED_DIR, EXPECTS, SCALES, TINY, Row, Study, expand_rows, load_study, select_cells

VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass
class Trial:
    label: str
    seed: str | None  # train.seed as params.json gives it (with --seeds > 1)
    path: Path
    grid: GridResult
    _items: dict | None = None

    @property
    def items(self) -> dict:
        if self._items is None:
            path = self.path / storage.ITEMS
            try:
                with np.load(path) as data:
                    self._items = {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise M2DError(f"{path}: unreadable ({type(err).__name__}: {err}); the trial's per-item scores are "
                               "needed for the claims' intervals") from None
        return self._items

    def item(self, key: str) -> np.ndarray:
        if key not in self.items:
            raise M2DError(f"{self.path / storage.ITEMS}: no {key!r}; the claims need every compared cell's items")
        return self.items[key]


def collect(run_dir: Path) -> dict[str, list[Trial]]:
    """Finished trials (params.json, grid.csv and items.npz) by row label, one per training seed; a trial whose files
    cannot be read is one line naming the file."""
    out: dict[str, list[Trial]] = {}
    for folder in sorted((run_dir / storage.TRIALS).glob("*")):
        params, grid = folder / storage.PARAMS, folder / storage.GRID
        if not (params.is_file() and grid.is_file() and (folder / storage.ITEMS).is_file()):
            continue
        p = storage.read_params(params)
        if "row" not in p:
            raise M2DError(f"{params}: no 'row'; a study trial records its row label there")
        out.setdefault(p["row"], []).append(Trial(p["row"], p.get("train.seed"), folder, GridResult.from_csv(grid)))
    return out


def missing_trials(labels: list[str], seeds: int, trials: dict[str, list[Trial]]) -> list[str]:
    """The rows with fewer finished trials than seeds, as ``label (n of seeds)``."""
    return [f"{label} ({len(trials.get(label, []))} of {seeds})" for label in labels
            if len(trials.get(label, [])) < seeds]


def finished(run_dir: Path, rows: list[Row], describe: dict) -> dict[str, list[Trial]]:
    """The run's trials, refused unless every row of the run (study.json) finished with every seed: no table, claim
    or expected entry is made from part of a study."""
    trials = collect(run_dir)
    labels = [r.label for r in rows]
    stray = sorted(set(trials) - set(labels))
    if stray:
        raise M2DError(f"{run_dir / storage.TRIALS}: trials of {', '.join(stray)}, which are no rows of this run "
                       f"({storage.STUDY}: {', '.join(labels)})")
    missing = missing_trials(labels, describe["seeds"], trials)
    if missing:
        done = sum(min(len(trials.get(label, [])), describe["seeds"]) for label in labels)
        raise M2DError(f"{run_dir}: {done} of {len(labels) * describe['seeds']} trials finished (missing: "
                       f"{', '.join(missing)}); no tables from part of a study: continue it with --resume {run_dir}")
    return trials


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
    path = ref_dir / spec["file"]
    out: dict[str, dict[tuple[int, int], float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        for group, match in spec["rows"].items():
            for rec in records:
                if all(rec.get(k) == str(v) for k, v in match.items()):
                    out.setdefault(group, {})[(int(rec["layer"]), int(rec["dim"]))] = float(rec[spec["value"]])
    except (KeyError, ValueError, TypeError, csv.Error) as err:
        raise M2DError(f"{path}: unreadable seed reference ({type(err).__name__}: {err}); expected columns layer, dim, "
                       f"{spec['value']} and those of seed_reference.rows") from None
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
        comps = [Component(np.stack([t.item(f"{s}/cosine/{l}/{d}") for t, l, d in entries]), first[f"{s}/gold"])
                 for s in sets]
        return comps, [1 / len(sets)] * len(sets)
    return [Component(np.stack([t.item(f"{ds}/{name}/{l}/{d}") for t, l, d in entries]))], [1.0]


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
    raise M2DError(f"claims: unknown expect {expect!r}; allowed {', '.join(EXPECTS)}")


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
    """Write tables/*.csv, heatmaps, report.md, claims.md (+ claims.json) for a finished run; returns the paths.
    Everything that reads the trials (the claims load their items) comes before the first write."""
    trials = collect(run_dir) if trials is None else trials
    if not trials:
        raise M2DError(f"{run_dir}: no finished trial (trials/*/grid.csv with items.npz)")
    describe = read_study_json(run_dir) if (run_dir / storage.STUDY).is_file() else {}
    results = evaluate_claims(study, rows, trials, n_boot)
    seed = seed_table(study, reference_dir((study.base().get("data") or {}).get("data_dir")))
    written = write_tables(run_dir, study, rows, trials)
    out = run_dir / storage.TABLES
    (out / storage.CLAIMS).write_text(json.dumps(results, indent=2))
    (out / "claims.md").write_text(claims_markdown(study, results, seed, n_boot))
    (out / storage.REPORT).write_text(report_markdown(study, rows, trials, seed, describe) + "\n"
                                   + claims_markdown(study, results, seed, n_boot))
    return written + [out / storage.CLAIMS, out / "claims.md", out / storage.REPORT]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- run dirs: analyse, expected results, check ------------------------------------------------------------
def read_study_json(run_dir: Path) -> dict:
    """A run's ``study.json`` (what :meth:`StudyRun.describe` wrote), its shape checked; ``rows`` filled in from the
    config hashes for runs written before it was recorded."""
    path = run_dir / storage.STUDY
    if not path.is_file():
        raise M2DError(f"{run_dir}: not a finished study run (no {storage.STUDY})")
    d = storage.read_json(path, storage.STUDY)
    hashes = d.get("config_hash")
    checks = [("study_file", isinstance(d.get("study_file"), str) and d["study_file"], "a study YAML path"),
              ("scale", d.get("scale") in SCALES, f"one of {', '.join(SCALES)}"),
              ("data", d.get("data") is None or isinstance(d["data"], str), "a dataset option or null"),
              ("sets", _texts(d.get("sets", [])), "a list of KEY=VALUE"),
              ("seeds", isinstance(d.get("seeds", 1), int) and not isinstance(d.get("seeds", 1), bool)
               and d.get("seeds", 1) >= 1, "a number >= 1"),
              ("config_hash", isinstance(hashes, dict) and hashes and _texts(list(hashes.values())),
               "a mapping of row label -> hash"),
              ("rows", _texts(d.get("rows", [""])) and d.get("rows", [""]), "a list of row labels")]
    for key, ok, allowed in checks:
        if not ok:
            raise M2DError(f"{path}: {key}: {str(d.get(key, 'missing'))[:60]!r}; expected {allowed}")
    return {**d, "sets": d.get("sets", []), "seeds": d.get("seeds", 1), "rows": d.get("rows", list(hashes))}


def _texts(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def study_of(run_dir: Path) -> tuple[Study, list[Row], dict]:
    """The run's study, the rows it ran (study.json; a ``--rows`` run has fewer than its study) and its study.json."""
    d = read_study_json(run_dir)
    study = load_study(d["study_file"], d["scale"], d.get("data"), d.get("sets"))
    rows = expand_rows(study)
    gone = [label for label in d["rows"] if label not in {r.label for r in rows}]
    if gone:
        raise M2DError(f"{run_dir / storage.STUDY}: rows {', '.join(gone)} are no rows of {study.path} any more "
                       "(the study file changed since the run)")
    return study, [r for r in rows if r.label in d["rows"]], d


def analyse_run_dir(run_dir: Path, args) -> int:
    study, rows, d = study_of(run_dir)
    for path in analyse(run_dir, study, rows, args.bootstrap, finished(run_dir, rows, d)):
        if path.suffix == ".md":
            print(f"reproduce: wrote {path}")
    return 0


def expected_path(study: Study, flag: str | None = None, writing: bool = False) -> Path:
    """``--expected FILE``, else ``experiments/expected/<study>.yaml`` of a source checkout (a wheel has none)."""
    if flag:
        path = Path(flag).expanduser().resolve()
        if path.is_dir():
            raise M2DError(f"--expected: {path} is a folder; give the expected results file (.yaml)")
        if writing and not path.parent.is_dir():
            raise M2DError(f"--expected: {path.parent} does not exist; give a file in an existing folder")
        return path
    if not EXPECTED_DIR.is_dir():
        raise M2DError(f"--expected: no {EXPECTED_DIR} (an installed package has no experiments/ folder); give "
                       "--expected FILE")
    return EXPECTED_DIR / f"{study.name}.yaml"


ENTRY_KEYS = ("command", "model", "data", "config_hash", "seeds", "tolerance", "dims", "cells")


def read_expected(path: Path) -> dict:
    """The expected results file: scale -> entry, every entry's shape checked (a missing file: no entries)."""
    if not path.exists():
        return {}
    registry = load_yaml(path, what="expected results", shape="top level must be a mapping of scale -> entry")
    for scale, entry in registry.items():
        try:
            _check_entry(entry)
        except M2DError as err:
            raise M2DError(f"expected results {path}: {scale}: {err}") from None
    return registry


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict):
        raise M2DError(f"expected a mapping ({', '.join(ENTRY_KEYS)}), got {type(entry).__name__}")
    bad = [k for k in entry if k not in ENTRY_KEYS] or [k for k in ("dims", "cells", "tolerance") if k not in entry]
    if bad:
        raise M2DError(f"{'unknown' if bad[0] in entry else 'missing'} key {bad[0]!r}; allowed: "
                       f"{', '.join(ENTRY_KEYS)}")
    dims = entry["dims"]
    if not isinstance(dims, list) or not all(_number(d) and d == int(d) and d > 0 for d in dims) \
            or dims != sorted(set(dims)):
        raise M2DError(f"dims: expected ascending dims such as [8, 16, 32], got {str(dims)[:60]}")
    if not (_number(entry["tolerance"]) and 0 < entry["tolerance"] < math.inf):
        raise M2DError(f"tolerance: expected a positive number, got {entry['tolerance']!r}")
    if not (isinstance(entry.get("seeds", 1), int) and entry.get("seeds", 1) >= 1):
        raise M2DError(f"seeds: expected a number >= 1, got {entry['seeds']!r}")
    if not isinstance(entry.get("config_hash", {}), dict) or not isinstance(entry.get("data", {}), dict):
        raise M2DError("config_hash and data: expected mappings")
    if not isinstance(entry["cells"], dict):
        raise M2DError(f"cells: expected a mapping of row -> metric -> layer -> values, got "
                       f"{type(entry['cells']).__name__}")
    for group, metrics in entry["cells"].items():
        for metric, layers in (metrics.items() if isinstance(metrics, dict) else [(None, None)]):
            for layer, values in (layers.items() if isinstance(layers, dict) else [(None, None)]):
                where = f"cells.{group}.{metric}.{layer}"
                if metric is None or layers is None or not (isinstance(layer, str) and layer[:1] == "L"
                                                             and layer[1:].isdigit()):
                    raise M2DError(f"{where}: expected cells: {{row: {{metric: {{L<layer>: [value per dim]}}}}}}")
                if not isinstance(values, list) or len(values) != len(dims) or not all(
                        v is None or _number(v) for v in values):
                    raise M2DError(f"{where}: expected {len(dims)} values (one per dim of {dims}) or null")


def _has_cells(entry: dict) -> bool:
    return any(v is not None for ms in entry["cells"].values() for ls in ms.values() for vs in ls.values() for v in vs)


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


def new_entry(study: Study, rows: list[Row], d: dict, trials) -> dict:
    """The expected entry this run makes on its own."""
    from ..tracking import Tag, data_checksums
    from .spec import row_config

    command = f"python experiments/reproduce.py --study {study.name} --scale {study.scale}" + \
        (f" --data {study.data}" if study.data else "") + "".join(f" --set {s}" for s in d.get("sets") or [])
    cfg = row_config(study, rows[0])
    tiny = (study.base().get("model") or {}).get("name") == TINY
    return {"command": command, "model": "tiny-bert (random 4 x 96, seed 0)" if tiny else cfg.model.name,
            "data": {k.removeprefix(Tag.DATA): v for k, v in sorted(data_checksums(cfg).items())},
            "config_hash": d["config_hash"], "seeds": d["seeds"],
            "tolerance": 0.005 if study.scale == "smoke" else 0.01, **measured(study, rows, trials)}


def merge_entry(old: dict, new: dict, groups: list[str], order: list[str]) -> dict:
    """``old`` with the rows (groups) of this run replaced by ``new``'s; every other row's cells and config hashes are
    kept. Rows of another command, model, seed count or data cannot share an entry."""
    for key in ("command", "model", "seeds", "data"):
        if key in old and old[key] != new[key]:
            raise M2DError(f"--write-expected: this run's {key} ({str(new[key])[:80]}) differs from the entry's "
                           f"({str(old[key])[:80]}); rows of different runs cannot share an entry: --replace-entry "
                           "records this run alone")
    dims = sorted(set(old["dims"]) | set(new["dims"]))
    cells = {}
    for group in [g for g in order if g in groups or g in old["cells"]] + [g for g in old["cells"] if g not in order]:
        source = new if group in groups else old
        if group in source["cells"]:
            cells[group] = {m: {layer: _relayout(values, source["dims"], dims) for layer, values in layers.items()}
                            for m, layers in source["cells"][group].items()}
    hashes = {k: v for k, v in (old.get("config_hash") or {}).items() if k.split("@")[0] not in groups}
    return {**new, "tolerance": old["tolerance"], "config_hash": {**hashes, **new["config_hash"]}, "dims": dims,
            "cells": cells}


def _relayout(values: list, dims: list[int], to: list[int]) -> list:
    by_dim = dict(zip(dims, values))
    return [by_dim.get(d) for d in to]


def write_expected(run_dir: Path, args) -> int:
    """Record a finished, complete run in its scale's entry: its rows (groups) replace theirs, the entry's other rows
    stay; ``--replace-entry`` writes this run alone."""
    study, rows, d = study_of(run_dir)
    trials = finished(run_dir, rows, d)
    path = expected_path(study, args.expected, writing=True)
    registry = read_expected(path)
    everything = expand_rows(study)
    groups = list(dict.fromkeys(r.group for r in rows))
    for group in groups:
        whole = [r.label for r in everything if r.group == group]
        if any(label not in d["rows"] for label in whole):
            raise M2DError(f"--write-expected: the run has only {', '.join(x for x in whole if x in d['rows'])} of row "
                           f"{group} ({', '.join(whole)}); an entry holds whole rows: run all of them")
    entry = new_entry(study, rows, d, trials)
    empty = [g for g in groups if g not in entry["cells"]]
    if empty and not args.replace_entry:
        raise M2DError(f"--write-expected: rows {', '.join(empty)} have no {', '.join(study.metrics)} cell in "
                       f"{run_dir}; nothing to record for them (--replace-entry writes the entry without them)")
    old = registry.get(study.scale)
    if old and not args.replace_entry:
        entry = merge_entry(old, entry, groups, list(study.spec["rows"]))
    if not _has_cells(entry) and not args.replace_entry:
        raise M2DError(f"--write-expected: {run_dir} has no cell to record; an empty entry would pass every check")
    registry[study.scale] = entry
    header = (f"# Expected results of the {study.name} study, per scale: written by `reproduce.py --write-expected "
              "RUN_DIR`,\n# checked by `reproduce.py --check RUN_DIR` (every cell within its tolerance). Values are "
              "means over seeds.\n")
    _write_atomically(path, header + yaml.safe_dump(registry, sort_keys=False, width=120, default_flow_style=None))
    kept = [g for g in entry["cells"] if g not in groups]
    print(f"reproduce: recorded rows {', '.join(groups)} of {study.name} ({study.scale}) in {path}"
          + (f"; kept rows {', '.join(kept)}" if kept else ""))
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """A killed or failed write leaves the old file as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise M2DError(f"--expected: cannot write {path} ({err.strerror})") from None


def check_run_dir(run_dir: Path, args) -> int:
    """Compare a finished run with its scale's expected entry; exit 1 naming every moved or missing cell and every
    row of the entry the run lacks."""
    study, rows, d = study_of(run_dir)
    trials = finished(run_dir, rows, d)
    path = expected_path(study, args.expected)
    registry = read_expected(path)
    if study.scale not in registry:
        raise M2DError(f"--check: {path} has no {study.scale} entry; record one with --write-expected {run_dir}")
    entry = registry[study.scale]
    if not _has_cells(entry):
        raise M2DError(f"--check: the {study.scale} entry of {path} has no expected cell; it would pass any run: "
                       f"record a complete run with --write-expected RUN_DIR")
    got = measured(study, rows, trials)
    tol = float(entry["tolerance"])
    lacking = [g for g in entry["cells"] if g not in {r.group for r in rows}]
    moved, compared = [], 0
    for group, metrics in entry["cells"].items():
        for metric, layers in metrics.items():
            for layer, values in layers.items():
                for dim, want in zip(entry["dims"], values):
                    if want is None or group in lacking:
                        continue
                    have = _lookup(got, group, metric, layer, dim)
                    compared += 1
                    if have is None or math.isnan(have) or abs(have - want) > tol:
                        moved.append(f"{group} {metric} {layer} d{dim}: expected {want:.4f}, got "
                                     f"{'missing' if have is None else f'{have:.4f}'}")
    changed = sorted(k for k, v in (entry.get("config_hash") or {}).items()
                     if k in d["config_hash"] and d["config_hash"][k] != v)
    if changed:
        print(f"reproduce: note: the config of {', '.join(changed)} differs from the recorded one")
    unrecorded = [g for g in got["cells"] if g not in entry["cells"]]
    if unrecorded:
        print(f"reproduce: note: rows {', '.join(unrecorded)} have no expected cells in {path.name}; not checked")
    if moved:
        print(f"reproduce: {len(moved)} of {compared} cells moved beyond +-{tol:g} from {path.name} ({study.scale}):")
        for line in moved:
            print(f"  {line}")
    if lacking:
        print(f"reproduce: the run lacks rows {', '.join(lacking)} of {path.name} ({study.scale}); a check covers "
              "every row of the entry")
    if moved or lacking:
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
