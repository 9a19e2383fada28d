"""Layer x dim heatmaps of a grid result (matplotlib Agg: works headless, on workers and in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def heatmap(result, dataset: str, metric: str, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG: rows = layers (first layer on top), columns = dims, each cell annotated with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, dims, values = result.matrix(dataset, metric)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(dims), 1.0 + 0.5 * len(layers)), dpi=120)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9)
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("dim")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{dataset} {metric}")
    mid = (vmin + vmax) / 2
    size = 9 if len(dims) <= 8 else 7
    for i in range(len(layers)):
        for j in range(len(dims)):
            v = values[i, j]
            text = "nan" if not np.isfinite(v) else f"{v:.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="black" if np.isfinite(v) and v > mid else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_name(dataset: str, metric: str) -> str:
    """``heatmap_<dataset>_<metric>.png`` with characters unsafe in file names replaced by ``_``."""
    safe = lambda s: "".join(c if c.isalnum() or c in "@.-_" else "_" for c in s)  # noqa: E731
    return f"heatmap_{safe(dataset)}_{safe(metric)}.png"


def method_curves(cells: dict[str, dict[tuple[int, int], float]], metric: str, path: str | Path) -> Path:
    """One figure comparing methods: left, the mean over dims per layer; right, the mean over layers per dim
    (``cells``: method -> (layer, dim) -> value). Methods that cover one cell per layer (separately trained
    models) are drawn as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    for method, by_cell in cells.items():
        layers = sorted({l for l, _ in by_cell})
        dims = sorted({d for _, d in by_cell})
        per_layer = [np.mean([v for (l, _), v in by_cell.items() if l == layer]) for layer in layers]
        per_dim = [np.mean([v for (_, d), v in by_cell.items() if d == dim]) for dim in dims]
        style = "o" if len(by_cell) <= len(layers) else "o-"
        left.plot(layers, per_layer, style, label=method)
        right.plot(dims, per_dim, style, label=method)
    all_layers = sorted({l for c in cells.values() for l, _ in c})
    all_dims = sorted({d for c in cells.values() for _, d in c})
    left.set_xticks(all_layers)
    left.set_xlabel("layer")
    left.set_ylabel(f"{metric}, mean over dims")
    right.set_xscale("log", base=2)
    right.set_xticks(all_dims, [str(d) for d in all_dims])
    right.minorticks_off()
    right.set_xlabel("dim")
    right.set_ylabel(f"{metric}, mean over layers")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
