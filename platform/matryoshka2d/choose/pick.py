"""The best cell for a budget: every (layer, dim, precision) cell has a quality, a query-encoding latency (of an
encoder cut to that layer, measured on this machine) and a size (bytes per stored vector). ``m2d pick`` prints the
best cell within ``--max-latency-ms`` / ``--max-bytes`` and the Pareto frontier of the three.

Latency depends on the architecture (layers, width, max length, threads), not on the weights, so one
``latency.json`` (``m2d eval --latency``) serves every run of that model on the machine it was measured on.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .. import storage
from ..errors import M2DError
from ..evaluate.grid import GridResult
from ..evaluate.precision import bytes_per_vector, split_metric

BATCH_SIZES = (1, 128)


# -- latency ----------------------------------------------------------------------------------------------
def measure_latency(encoder, texts: Sequence[str], batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = 5) -> dict:
    """Milliseconds to tokenize and encode one batch of ``texts`` with the encoder cut to each layer l (the pooled
    output of block l; layer 0: the pooled embedding output, no block run), per batch size: the best of ``repeats``
    timed batches (x 8 at batch 1) after a warm-up, since on a shared CPU the noise only ever adds time (timeit's
    advice). Records the model and its layer count, so a grid of another model is not priced with it. Cuts
    ``encoder`` in place, from the top layer down: call it last."""
    import torch

    from ..encoder import truncate_layers
    from .export import hardware

    texts = list(texts)
    if not texts:
        raise M2DError("latency: no texts to encode")
    num_layers, model = encoder.num_layers, str(getattr(encoder.module, "name_or_path", "") or "")
    per_layer: dict[str, dict[str, float]] = {}
    encoder.eval()
    for layer in range(num_layers, -1, -1):
        if layer:
            truncate_layers(encoder, layer)
        run = (lambda f, layer=layer: encoder(f, [layer])) if layer else (lambda f: embedding_output(encoder, f))
        per_layer[str(layer)] = {}
        for size in batch_sizes:
            n = repeats * (8 if size == 1 else 1)
            batches = [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(n + 1)]
            times = []
            with torch.inference_mode():
                for batch in batches:
                    t0 = time.perf_counter()
                    run(encoder.tokenize(batch))
                    times.append(time.perf_counter() - t0)
            per_layer[str(layer)][str(size)] = 1000 * min(times[1:])  # the first is a warm-up
    return {"hardware": hardware(), "model": model, "num_layers": num_layers, "max_length": encoder.max_length,
            "hidden_size": encoder.hidden_size, "repeats": repeats, "texts": len(texts),
            "ms_per_batch": dict(sorted(per_layer.items(), key=lambda kv: int(kv[0])))}


def embedding_output(encoder, features: dict):
    """Layer 0 as the grid scores it (``encoder(features, [0])``): the pooled embedding output, computed without
    running any block; a model with no ``embeddings`` module runs its first block as well (an upper bound)."""
    import inspect

    embeddings = getattr(encoder.module, "embeddings", None)
    if embeddings is None:
        return encoder(features, [0])
    accepted = inspect.signature(embeddings.forward).parameters
    features = {k: v.to(encoder.device) for k, v in features.items()}
    hidden = embeddings(**{k: v for k, v in features.items() if k in accepted and k != "attention_mask"})
    return encoder.pool(hidden, features["attention_mask"])


def load_latency(path: Path) -> dict:
    """A latency.json (:func:`measure_latency`) with every field later code uses checked: ``hardware`` (processor,
    torch threads), ``max_length``, ``ms_per_batch`` as ``{layer >= 0: {batch size >= 1: ms > 0}}`` with the same
    batch sizes at every layer, and ``num_layers`` (``None`` in files from before it was recorded)."""
    data = storage.read_json(path, storage.LATENCY)
    what = "not a latency.json written by m2d eval --latency"
    hw = data.get("hardware")
    if not isinstance(hw, dict):
        raise M2DError(f"{path}: no 'hardware' object (where it was measured); {what}")
    for key, kind, name in (("processor", str, "text"), ("torch_threads", int, "an integer")):
        if not isinstance(hw.get(key), kind) or isinstance(hw.get(key), bool):
            raise M2DError(f"{path}: hardware.{key} is missing or not {name}; {what}")
    for key, required in (("max_length", True), ("num_layers", False)):
        value = data.get(key)
        if (value is not None or required) and not (_is_int(value) and value >= 1):
            raise M2DError(f"{path}: {key} {value!r} is not a positive integer; {what}")
    data["num_layers"] = data.get("num_layers")
    data["ms_per_batch"] = _ms_table(data.get("ms_per_batch"), path, data["num_layers"])
    return data


def _ms_table(ms, path: Path, num_layers: int | None) -> dict[int, dict[int, float]]:
    if not isinstance(ms, dict) or not ms:
        raise M2DError(f"{path}: ms_per_batch must be an object {{layer: {{batch size: ms}}}}, got {ms!r}"[:300])
    table: dict[int, dict[int, float]] = {}
    for layer_key, by in ms.items():
        layer = _key(layer_key, 0, num_layers, f"{path}: ms_per_batch layer")
        if not isinstance(by, dict) or not by:
            raise M2DError(f"{path}: ms_per_batch[{layer_key!r}] must be an object {{batch size: ms}}, "
                           f"got {by!r}"[:300])
        table[layer] = {}
        for size_key, value in by.items():
            size = _key(size_key, 1, None, f"{path}: ms_per_batch[{layer_key!r}] batch size")
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf):
                raise M2DError(f"{path}: ms_per_batch[{layer_key!r}][{size_key!r}] = {value!r}; allowed a positive "
                               "number of milliseconds")
            table[layer][size] = float(value)
    sizes = {tuple(sorted(by)) for by in table.values()}
    if len(sizes) > 1:
        raise M2DError(f"{path}: ms_per_batch has different batch sizes at different layers "
                       f"({' vs '.join(', '.join(map(str, s)) for s in sorted(sizes))})")
    return dict(sorted(table.items()))


def _key(text: str, low: int, high: int | None, what: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < low or (high is not None and int(text) > high):
        allowed = f"{low}..{high}" if high is not None else f"an integer >= {low}"
        raise M2DError(f"{what} {text!r} is not allowed; allowed {allowed}")
    return int(text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_latency(latency: dict, path: Path, layers: Sequence[int], num_layers: int | None) -> None:
    """``latency`` (:func:`load_latency`) prices exactly this grid (:func:`check_layers`)."""
    measured = latency["ms_per_batch"]
    theirs = latency["num_layers"] or max(measured)  # older files: every layer 1..L was measured
    check_layers(path, theirs, measured, layers, num_layers, latency.get("model") or "")


def check_layers(source: Path, theirs: int, measured, layers: Sequence[int], num_layers: int | None,
                 model: str = "") -> None:
    """Latency measured (or to be measured) at ``measured`` layers of a ``theirs``-layer model prices a grid with
    ``layers`` of a ``num_layers``-layer model (None: unknown) only if the counts agree and every grid layer is
    measured: another model's latency never prices a grid."""
    if num_layers is not None and theirs != num_layers:
        model = f" ({model})" if model else ""
        raise M2DError(f"--latency: {source} is of a {theirs}-layer model{model}, the grid is of a {num_layers}-layer "
                       "model; measure this model (m2d eval --latency, or --latency MODEL_DIR)")
    missing = [layer for layer in layers if layer not in measured]
    if missing:
        raise M2DError(f"--latency: {source} has no layer {missing[0]} of the grid (its layers: "
                       f"{', '.join(map(str, measured))}); measure the model the grid is of (m2d eval --latency)")


def grid_model_layers(home: Path | None, latency: Path) -> int | None:
    """The layer count of the model a run folder's grid is of: its ``model/`` (m2d train), else the latency.json
    that m2d eval --latency wrote beside the grid (when ``latency`` is another source); None where the folder does
    not say."""
    from ..resolve import model_shape

    if home is None:
        return None
    if (home / storage.MODEL / "config.json").is_file():
        return model_shape(str(home / storage.MODEL)).num_layers
    own = home / storage.LATENCY
    if own.is_file() and own.resolve() != Path(latency).resolve():
        return load_latency(own)["num_layers"]
    return None


def format_latency(data: dict) -> str:
    """A :func:`load_latency` result as a table."""
    sizes = sorted({b for by in data["ms_per_batch"].values() for b in by})
    hw = data["hardware"]
    lines = [f"query-encoding latency, ms per batch ({hw['processor']}, {hw['torch_threads']} threads, "
             f"max length {data['max_length']})", "layer " + "".join(f"{f'batch {b}':>12}" for b in sizes)]
    lines += [f"{l:>5} " + "".join(f"{by[b]:12.2f}" for b in sizes) for l, by in data["ms_per_batch"].items()]
    return "\n".join(lines)


# -- cells, budget, frontier ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    layer: int
    dim: int
    precision: str
    value: float
    latency_ms: float
    bytes: int


def check_metric(grid: GridResult, metric: str | None) -> str:
    """``metric`` (``<dataset>/<metric>``, default the grid's first) if the grid has it at some precision."""
    allowed = list(dict.fromkeys(f"{ds}/{split_metric(m)[0]}" for ds in grid.datasets() for m in grid.metrics(ds)))
    metric = metric or allowed[0]
    if metric not in allowed:
        raise M2DError(f"--metric: {metric!r} is not in the grid; allowed: {', '.join(sorted(allowed))}")
    return metric


def cells(grid: GridResult, metric: str, latency: dict, batch: int) -> list[Cell]:
    """Every cell of ``metric`` (``<dataset>/<metric>``) at every precision the grid has, with its costs."""
    ds, _, name = check_metric(grid, metric).partition("/")
    ms = latency["ms_per_batch"]
    if any(batch not in by for by in ms.values()):
        raise M2DError(f"--batch: {batch} was not measured; the latency file has batch sizes "
                       f"{', '.join(map(str, sorted(next(iter(ms.values())))))}")
    out = []
    for r in grid.rows:
        if r.dataset != ds or split_metric(r.metric)[0] != name or not math.isfinite(r.value):
            continue
        if r.layer not in ms:
            raise M2DError(f"latency: no measurement for layer {r.layer} (measured: {', '.join(map(str, ms))}); "
                           "measure the model the grid is of")
        precision = split_metric(r.metric)[1]
        out.append(Cell(r.layer, r.dim, precision, r.value, ms[r.layer][batch], bytes_per_vector(r.dim, precision)))
    if not out:
        raise M2DError(f"--metric: every {metric} value in the grid is NaN; nothing to pick from")
    return out


def frontier(candidates: list[Cell]) -> list[Cell]:
    """The cells no other cell beats on quality, latency and bytes at once (higher value, lower costs), best first."""
    def dominates(a: Cell, b: Cell) -> bool:
        no_worse = a.value >= b.value and a.latency_ms <= b.latency_ms and a.bytes <= b.bytes
        return no_worse and (a.value > b.value or a.latency_ms < b.latency_ms or a.bytes < b.bytes)

    front = [c for c in candidates if not any(dominates(o, c) for o in candidates)]
    return sorted(front, key=lambda c: (-c.value, c.latency_ms, c.bytes))


def best(candidates: list[Cell], max_latency_ms: float | None, max_bytes: float | None) -> Cell | None:
    fits = [c for c in candidates if (max_latency_ms is None or c.latency_ms <= max_latency_ms)
            and (max_bytes is None or c.bytes <= max_bytes)]
    return max(fits, key=lambda c: (c.value, -c.latency_ms, -c.bytes)) if fits else None


def plot_frontier(candidates: list[Cell], front: list[Cell], chosen: Cell | None, metric: str, hardware: str,
                  budget: tuple[float | None, float | None], path: Path) -> Path:
    """Quality against latency, one point per cell sized by bytes per vector; the frontier and the pick marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    precisions = sorted({c.precision for c in candidates})
    for k, p in enumerate(precisions):
        group = [c for c in candidates if c.precision == p]
        ax.scatter([c.latency_ms for c in group], [c.value for c in group], s=[8 + 6 * np.log2(c.bytes) ** 1.5 for c in group],
                   alpha=0.45, label=f"{p} (size ~ bytes)", marker="os^vD<>"[k % 7])
    ax.scatter([c.latency_ms for c in front], [c.value for c in front], facecolors="none", edgecolors="black",
               s=70, label="Pareto frontier")
    if chosen:
        ax.scatter([chosen.latency_ms], [chosen.value], marker="*", s=260, color="red",
                   label=f"pick: L{chosen.layer} D{chosen.dim} {chosen.precision} ({chosen.bytes} B)")
    if budget[0] is not None:
        ax.axvline(budget[0], color="red", lw=0.8, ls="--")
    ax.set_xlabel(f"query-encoding latency, ms per batch ({hardware})")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: every (layer, dim, precision) cell" + (f"; max {budget[1]:g} bytes" if budget[1] else ""))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_csv(front: list[Cell], path: Path) -> Path:
    import csv

    with Path(path).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(front[0])) if front else ["layer"])
        w.writeheader()
        w.writerows(asdict(c) for c in front)
    return Path(path)


def format_cells(rows: list[Cell], metric: str) -> str:
    lines = [f"{'layer':>5} {'dim':>5} {'precision':<15} {metric:>24} {'ms':>8} {'bytes':>7}"]
    lines += [f"{c.layer:>5} {c.dim:>5} {c.precision:<15} {c.value:24.4f} {c.latency_ms:8.2f} {c.bytes:>7}" for c in rows]
    return "\n".join(lines)
