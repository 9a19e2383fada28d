"""The (layer, dim) grid evaluator: encode each dataset once for all layers, then score every cell as a slice."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import storage
from ..cells import parse_dims, parse_layers
from ..data.types import RetrievalSet, STSPairs
from ..errors import M2DError
from . import quantized, retrieval, sts
from .precision import FLOAT, is_rescored, parse_precisions, split_metric
from .parallel import Executor, in_process

CSV_HEADER = ("dataset", "split", "metric", "layer", "dim", "value")
STS_AVG = "sts-avg"
SIMILARITIES = ("cos", "dot")


@dataclass(frozen=True)
class Row:
    dataset: str
    split: str
    metric: str
    layer: int
    dim: int
    value: float


@dataclass
class GridResult:
    """Tidy rows (one per dataset x metric x layer x dim) plus timings in seconds.

    ``items`` (with ``evaluate_grid(per_item=True)``): the per-pair / per-query values behind each cell, keyed
    ``<dataset>/<item>/<layer>/<dim>`` (items: ``cosine`` for STS, each metric for retrieval) plus
    ``<dataset>/gold`` (STS gold scores) and ``<dataset>/ids`` (query ids), for paired bootstraps.
    """

    rows: list[Row]
    layers: list[int]
    dims: list[int]
    timings: dict = field(default_factory=dict)
    items: dict[str, np.ndarray] = field(default_factory=dict)

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))

    def metrics(self, dataset: str) -> list[str]:
        return list(dict.fromkeys(r.metric for r in self.rows if r.dataset == dataset))

    def cell(self, dataset: str, metric: str, layer: int, dim: int) -> float:
        for r in self.rows:
            if (r.dataset, r.metric, r.layer, r.dim) == (dataset, metric, layer, dim):
                return r.value
        raise KeyError(f"no cell {dataset} {metric} layer={layer} dim={dim}")

    def matrix(self, dataset: str, metric: str) -> tuple[list[int], list[int], np.ndarray]:
        """(layers, dims, values [len(layers), len(dims)]) for one dataset and metric."""
        rows = [r for r in self.rows if r.dataset == dataset and r.metric == metric]
        if not rows:
            raise KeyError(f"no rows for {dataset} {metric}")
        layers = sorted({r.layer for r in rows})
        dims = sorted({r.dim for r in rows})
        out = np.full((len(layers), len(dims)), np.nan)
        for r in rows:
            out[layers.index(r.layer), dims.index(r.dim)] = r.value
        return layers, dims, out

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_HEADER)
            writer.writerows((r.dataset, r.split, r.metric, r.layer, r.dim, repr(r.value)) for r in self.rows)
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> "GridResult":
        """A grid written by :meth:`to_csv` (timings are not stored there), read strictly: a file cut short (a write
        that died mid-row), a bad row or a grid without rows is one line naming ``<path> line N``, never a wrong
        value or silently dropped rows."""
        text = storage.read_text(path, storage.GRID)
        if not text:
            raise M2DError(f"{path}: file is empty (expected the header {','.join(CSV_HEADER)} and rows)")
        if not text.endswith("\n"):  # to_csv ends every row with a newline: the last one was never finished
            last = len(text.splitlines())
            raise M2DError(f"{path} line {last} is cut short (no newline at its end; a partial write?)")
        reader = csv.reader(io.StringIO(text, newline=""))
        if tuple(next(reader, ())) != CSV_HEADER:
            raise M2DError(f"{path}: not a grid.csv (expected the header {','.join(CSV_HEADER)})")
        rows, seen = [], {}
        for fields in reader:
            where = f"{path} line {reader.line_num}"
            row = _grid_row(fields, where)
            key = (row.dataset, row.split, row.metric, row.layer, row.dim)
            if key in seen:
                raise M2DError(f"{where}: cell {row.dataset} {row.metric} layer {row.layer} dim {row.dim} is given "
                               f"again (first on line {seen[key]})")
            seen[key] = reader.line_num
            rows.append(row)
        if not rows:
            raise M2DError(f"{path}: no rows, only the header (a grid has at least one cell)")
        return cls(rows, sorted({r.layer for r in rows}), sorted({r.dim for r in rows}))

    def save_items(self, path: str | Path) -> Path:
        np.savez_compressed(path, **self.items)
        return Path(path)

    def as_frame(self):
        """The rows as a pandas DataFrame (pandas imported only here)."""
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows], columns=list(CSV_HEADER))


def _grid_row(fields: list[str], where: str) -> Row:
    """One grid.csv row: 6 columns, non-empty names, layer >= 0 and dim >= 1 integers, a finite value or nan."""
    if len(fields) != len(CSV_HEADER):
        raise M2DError(f"{where}: expected {len(CSV_HEADER)} columns ({','.join(CSV_HEADER)}), got {len(fields)}")
    dataset, split, metric, layer, dim, value = fields
    for name, text in (("dataset", dataset), ("split", split), ("metric", metric)):
        if not text.strip():
            raise M2DError(f"{where}: {name} is empty")
    ints = {}
    for name, text, low in (("layer", layer, 0), ("dim", dim, 1)):
        if not re.fullmatch(r"\s*-?\d+\s*", text):
            raise M2DError(f"{where}: {name} {text!r} is not an integer; allowed {low} and up")
        ints[name] = int(text)
        if ints[name] < low:
            raise M2DError(f"{where}: {name} {ints[name]} is out of range; allowed {low} and up")
    try:
        number = float(value)
    except ValueError:
        raise M2DError(f"{where}: value {value!r} is not a number (allowed: a finite number or nan)") from None
    if math.isinf(number):
        raise M2DError(f"{where}: value {value!r} is infinite (allowed: a finite number or nan)")
    return Row(dataset, split, metric, ints["layer"], ints["dim"], number)


def evaluate_grid(encoder, datasets: Sequence[STSPairs | RetrievalSet], layers: str | Sequence[int] | None = None,
                  dims: str | Sequence[int] | None = None, batch_size: int = 64, similarity: str = "cos",
                  show_progress: bool | None = None, sts_avg: bool = False, ignore_identical_ids: bool = True,
                  executor: Executor = in_process, fixed_documents: bool = False, per_item: bool = False,
                  precisions: str | Sequence[str] | None = None, rescore_multiplier: int = 4) -> GridResult:
    """Score every (layer, dim) cell on every dataset, encoding each text set once.

    ``similarity`` applies to retrieval ("cos": renormalise the truncated vectors; "dot": raw inner product,
    as the Tevatron evaluation); STS always uses cosine. ``sts_avg`` adds ``sts-avg`` rows (mean Spearman
    over the STS sets, per cell). ``executor`` scores the cells of each dataset (:mod:`.parallel`: in-process by
    default, ``ray_tasks`` for Ray tasks); the caller chooses, it is never inferred from a running Ray.
    ``ignore_identical_ids`` drops a retrieved doc whose id equals the query id, as BEIR's evaluate does.
    ``fixed_documents``: documents are always encoded by the last layer (queries at (l, d), documents at (L, d)),
    the seed's "fixed-doc" setting. ``per_item`` keeps the per-pair / per-query values (:attr:`GridResult.items`).
    ``precisions`` (default float32 only) adds a third axis: each cell is also quantized (int8, binary, and their
    ``+rescore`` retrieval variants, see :mod:`.precision`) and scored as ``<metric>/<precision>`` rows; the
    embeddings are never re-encoded. ``rescore_multiplier``: candidates per kept hit for ``+rescore``.
    """
    if similarity not in SIMILARITIES:
        raise M2DError(f"similarity: unknown {similarity!r}; allowed {', '.join(SIMILARITIES)}")
    if similarity == "dot" and getattr(encoder, "normalize", False) and any(isinstance(d, RetrievalSet) for d in datasets):
        raise M2DError("similarity: dot, but the model's modules.json normalises the full embedding before a cell cuts "
                       "it (its cells' dot products would depend on the dims cut away); score by cos")
    layers = parse_layers(layers, encoder.num_layers)
    dims = parse_dims(dims, encoder.hidden_size)
    precisions = parse_precisions(precisions)
    if not (isinstance(rescore_multiplier, int) and rescore_multiplier >= 1):
        raise M2DError(f"rescore_multiplier: {rescore_multiplier!r} must be an integer >= 1")
    seen = set()
    for ds in datasets:
        check_evaluable(ds)
        if (ds.name, ds.split) in seen or ds.name == STS_AVG:
            raise M2DError(f"data: dataset name {ds.name!r} ({ds.split}) is given twice or reserved")
        seen.add((ds.name, ds.split))
    check_precisions(datasets, precisions)
    cells = [(pos, d) for pos in range(len(layers)) for d in dims]
    rows: list[Row] = []
    items: dict[str, np.ndarray] = {}
    timings = {"encode_s": 0.0, "score_s": 0.0, "datasets": {}}
    start = time.perf_counter()
    for ds in datasets:
        t0 = time.perf_counter()
        if isinstance(ds, STSPairs):
            fn, shared = sts.score_cell, _encode_sts(encoder, ds, layers, batch_size, show_progress)
            items[f"{ds.name}/gold"] = shared["gold"]
        elif isinstance(ds, RetrievalSet):
            doc_layers = [encoder.num_layers] if fixed_documents else layers
            fn, shared = retrieval.score_cell, _encode_retrieval(encoder, ds, layers, batch_size, show_progress,
                                                                 doc_layers)
            shared.update(similarity=similarity, ignore_identical_ids=ignore_identical_ids,
                          fixed_documents=fixed_documents)
            items[f"{ds.name}/ids"] = np.array(shared["qids"])
        else:
            raise M2DError(f"data: cannot evaluate {type(ds).__name__}; expected STSPairs or RetrievalSet")
        t1 = time.perf_counter()
        shared["per_item"] = per_item
        if precisions != [FLOAT]:  # the float32-only path stays exactly as it was
            shared.update(precisions=tuple(precisions), rescore_multiplier=rescore_multiplier)
            if isinstance(ds, RetrievalSet):
                shared["doc_ranks"] = quantized.doc_ranks(shared["doc_ids"])
        scores = executor(fn, shared, cells)
        t2 = time.perf_counter()
        for (pos, dim), metrics in zip(cells, scores):
            for name, values in metrics.pop("_items", {}).items():
                items[f"{ds.name}/{name}/{layers[pos]}/{dim}"] = values
            rows.extend(Row(ds.name, ds.split, m, layers[pos], dim, float(v)) for m, v in metrics.items())
        timings["datasets"][ds.name] = {"encode_s": t1 - t0, "score_s": t2 - t1}
        timings["encode_s"] += t1 - t0
        timings["score_s"] += t2 - t1
    if sts_avg:
        rows.extend(_sts_avg_rows(rows, [ds for ds in datasets if isinstance(ds, STSPairs)]))
    timings["total_s"] = time.perf_counter() - start
    return GridResult(rows, layers, dims, timings, items)


def check_evaluable(ds: STSPairs | RetrievalSet) -> None:
    """A set whose every cell would score ``nan`` (Spearman of < 2 pairs or of constant gold scores) or 0
    (qrels without a positive grade) is bad input, reported before any encoding, not a silent grid of nan."""
    where = f"{ds.name} ({ds.split})"
    if isinstance(ds, STSPairs):
        if len(ds) < 2:
            raise M2DError(f"{where}: {len(ds)} scored pair(s); Spearman needs at least 2")
        if min(ds.scores) == max(ds.scores):
            raise M2DError(f"{where}: every gold score is {ds.scores[0]:g}; Spearman of constant scores is undefined")
    elif isinstance(ds, RetrievalSet):
        if not any(grade > 0 for docs in ds.qrels.values() for grade in docs.values()):
            raise M2DError(f"{where}: the qrels have no positive grade; every query would score 0")


def check_precisions(datasets: Sequence[STSPairs | RetrievalSet], precisions: Sequence[str]) -> None:
    """``+rescore`` is a search step, retrieval only: an STS set given only rescored precisions would get no row."""
    sts_sets = [ds.name for ds in datasets if isinstance(ds, STSPairs)]
    if sts_sets and all(is_rescored(p) for p in precisions):
        raise M2DError(f"precision: {', '.join(precisions)} is retrieval only ('+rescore'); the STS set {sts_sets[0]} "
                       f"needs float32, int8 or binary as well")


def _encode_sts(encoder, ds: STSPairs, layers, batch_size, show_progress) -> dict:
    texts, idx1, idx2 = sts.unique_sentences(ds)
    emb = encoder.encode_layers(texts, layers, batch_size=batch_size, show_progress=show_progress, desc=ds.name)
    return {"emb": emb.numpy(), "idx1": idx1, "idx2": idx2, "gold": np.asarray(ds.scores, dtype=np.float64)}


def _encode_retrieval(encoder, ds: RetrievalSet, layers, batch_size, show_progress, doc_layers=None) -> dict:
    qids, qtexts, doc_ids, doc_texts, qrels = retrieval.prepare(ds)
    queries = encoder.encode_layers(qtexts, layers, batch_size=batch_size, show_progress=show_progress,
                                    desc=f"{ds.name} queries", role="query")
    corpus = encoder.encode_layers(doc_texts, doc_layers or layers, batch_size=batch_size, show_progress=show_progress,
                                   desc=f"{ds.name} corpus", role="document")
    return {"queries": queries.numpy(), "corpus": corpus.numpy(), "qids": qids, "doc_ids": doc_ids, "qrels": qrels}


def _sts_avg_rows(rows: list[Row], sts_sets: list[STSPairs]) -> list[Row]:
    """Per cell and precision, the mean Spearman over the STS sets evaluated (the split is theirs if shared, else
    ``mixed``)."""
    if not sts_sets:
        raise M2DError(f"data: {STS_AVG} needs at least one STS dataset")
    names = {ds.name for ds in sts_sets}
    splits = {ds.split for ds in sts_sets}
    split = splits.pop() if len(splits) == 1 else "mixed"
    by_cell: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        if r.dataset in names and split_metric(r.metric)[0] == "spearman":
            by_cell.setdefault((r.metric, r.layer, r.dim), []).append(r.value)
    return [Row(STS_AVG, split, metric, layer, dim, float(np.mean(v))) for (metric, layer, dim), v in by_cell.items()]


# the summaries :func:`summarize` gives per dataset x metric, logged as ``<ds>/<metric>/<summary>`` and offered as
# sweep objectives
SUMMARIES = ("grid_mean", "sublayer_mean", "lowdim_mean", "full", "worst_cell")
DEFAULT_OBJECTIVE = "stsb/spearman/grid_mean:max"


def parse_objectives(items: list[str] | None) -> list[tuple[str, str]]:
    """``--objective`` values (a study's ``objective``) -> ``[(<ds>/<metric>/<summary>, max|min)]``."""
    out = []
    for item in items or [DEFAULT_OBJECTIVE]:
        name, _, mode = item.partition(":")
        mode = mode or "max"
        parts = name.split("/")
        if mode not in ("max", "min") or len(parts) != 3 or parts[2] not in SUMMARIES:
            raise M2DError(f"--objective: {item!r}; expected <dataset>/<metric>/<summary>[:max|min] with summary one "
                           f"of {', '.join(SUMMARIES)}, e.g. {DEFAULT_OBJECTIVE}")
        out.append((name, mode))
    if len({n for n, _ in out}) != len(out):
        raise M2DError("--objective: the same metric is given twice")
    return out


def summarize(result: GridResult, flat: bool = False) -> dict:
    """Per dataset and metric: ``grid_mean`` (all cells), ``sublayer_mean`` (layer < max layer),
    ``lowdim_mean`` (dim < max dim), ``full`` (max layer, max dim) and ``worst_cell`` (the weakest finite cell of
    layer < max layer, of all cells when there is one layer); NaN where a subset is empty.

    ``worst_cell`` is the second objective of multi-objective sweeps: a method can raise the grid mean while one
    small cell collapses. ``flat=True`` gives ``{"<dataset>/<metric>/<name>": value}`` (ready for MLflow-style logging).
    """
    out: dict = {}
    for ds in result.datasets():
        for metric in result.metrics(ds):
            layers, dims, m = result.matrix(ds, metric)
            out.setdefault(ds, {})[metric] = {
                "grid_mean": _mean(m),
                "sublayer_mean": _mean(m[:-1, :]),
                "lowdim_mean": _mean(m[:, :-1]),
                "full": float(m[-1, -1]),
                "worst_cell": _min(m[:-1, :] if m.shape[0] > 1 else m),
            }
    if flat:
        return {f"{ds}/{metric}/{k}": v for ds, ms in out.items() for metric, vals in ms.items() for k, v in vals.items()}
    return out


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def _min(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan
