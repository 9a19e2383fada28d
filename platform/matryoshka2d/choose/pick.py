"""The best cell for a budget: every (layer, dim, precision) cell has a quality, a query-encoding latency (of an
encoder cut to that layer, measured on this machine) and a size (bytes per stored vector). ``m2d pick`` prints the
best cell within ``--max-latency-ms`` / ``--max-bytes`` and the Pareto frontier of the three.

Latency depends on the architecture (layers, width, max length, threads), not on the weights, so one
``latency.json`` (``m2d eval --latency``) serves every run of that model on the machine it was measured on.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..errors import M2DError
from ..evaluate.grid import GridResult
from ..evaluate.precision import bytes_per_vector, split_metric

BATCH_SIZES = (1, 128)


# -- latency ----------------------------------------------------------------------------------------------
def measure_latency(encoder, texts: Sequence[str], batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = 5) -> dict:
    """Milliseconds to tokenize and encode one batch of ``texts`` with the encoder cut to each layer l (the pooled
    output of block l), per batch size: the best of ``repeats`` timed batches (x 8 at batch 1) after a warm-up, since
    on a shared CPU the noise only ever adds time (timeit's advice). Cuts ``encoder`` in place, from the top layer
    down: call it last."""
    import torch

    from ..encoder import truncate_layers
    from .export import hardware

    texts = list(texts)
    if not texts:
        raise M2DError("latency: no texts to encode")
    per_layer: dict[str, dict[str, float]] = {}
    encoder.eval()
    for layer in range(encoder.num_layers, 0, -1):
        truncate_layers(encoder, layer)
        per_layer[str(layer)] = {}
        for size in batch_sizes:
            n = repeats * (8 if size == 1 else 1)
            batches = [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(n + 1)]
            times = []
            with torch.inference_mode():
                for batch in batches:
                    t0 = time.perf_counter()
                    encoder(encoder.tokenize(batch), [layer])
                    times.append(time.perf_counter() - t0)
            per_layer[str(layer)][str(size)] = 1000 * min(times[1:])  # the first is a warm-up
    return {"hardware": hardware(), "max_length": encoder.max_length, "hidden_size": encoder.hidden_size,
            "repeats": repeats, "texts": len(texts), "ms_per_batch": dict(sorted(per_layer.items(), key=lambda kv: int(kv[0])))}


def load_latency(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        data["ms_per_batch"] = {int(l): {int(b): float(v) for b, v in by.items()} for l, by in data["ms_per_batch"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise M2DError(f"{path}: not a latency.json written by m2d eval --latency ({err})") from None
    return data


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


def cells(grid: GridResult, metric: str, latency: dict, batch: int) -> list[Cell]:
    """Every cell of ``metric`` (``<dataset>/<metric>``) at every precision the grid has, with its costs."""
    ds, _, name = metric.partition("/")
    if ds not in grid.datasets():
        raise M2DError(f"--metric: dataset {ds!r} is not in the grid; it has {', '.join(grid.datasets())}")
    base_names = sorted({split_metric(m)[0] for m in grid.metrics(ds)})
    if name not in base_names:
        raise M2DError(f"--metric: {metric!r} is not in the grid; allowed: {', '.join(f'{ds}/{m}' for m in base_names)}")
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
