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


# -- several runs side by side (m2d compare, a sweep's parent run) ----------------------------------------
def _panel_grid(n: int, layers: list[int], dims: list[int], cols: int = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, n)
    rows = -(-n // cols)
    w, h = 0.55 * len(dims) + 0.9, 0.36 * len(layers) + 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols + 1.2, h * rows + 0.6), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _cells(ax, values: np.ndarray, layers: list[int], dims: list[int], fmt: str, dark) -> None:
    ax.set_xticks(range(len(dims)), [str(d) for d in dims], fontsize=7)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
    size = 6 if len(dims) <= 8 else 5
    for i in range(len(layers)):
        for j in range(len(dims)):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=size,
                        color="white" if dark(v) else "black")


def small_multiples(panels: dict[str, np.ndarray], layers: list[int], dims: list[int], title: str,
                    path: str | Path) -> Path:
    """Every run's layer x dim grid, one panel each, on ONE colour scale (so panels compare by colour)."""
    import matplotlib.pyplot as plt

    fig, axes = _panel_grid(len(panels), layers, dims)
    finite = np.concatenate([v[np.isfinite(v)] for v in panels.values()] or [np.zeros(0)])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    vmax = vmax if vmax > vmin else vmin + 1e-9
    mid = (vmin + vmax) / 2
    for ax, (label, values) in zip(axes, panels.items()):
        image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
        _cells(ax, values, layers, dims, ".3f", lambda v: v <= mid)
        ax.set_title(_wrap(label), fontsize=8)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02)
    fig.suptitle(f"{title} (rows: layer, columns: dim; one colour scale)", fontsize=10, y=_top(fig))
    return _save(fig, plt, path)


def difference_grids(panels: dict[str, np.ndarray], baseline: str, layers: list[int], dims: list[int], title: str,
                     path: str | Path) -> Path:
    """Each run minus the baseline, cell by cell, on one symmetric diverging scale (blue: better than baseline)."""
    import matplotlib.pyplot as plt

    base = panels[baseline]
    diffs = {label: values - base for label, values in panels.items() if label != baseline}
    if not diffs:  # one run: nothing to subtract; say so instead of an empty figure
        diffs = {f"{baseline} (only run)": np.zeros_like(base)}
    fig, axes = _panel_grid(len(diffs), layers, dims)
    finite = np.concatenate([v[np.isfinite(v)] for v in diffs.values()])
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1e-9
    for ax, (label, values) in zip(axes, diffs.items()):
        image = ax.imshow(values, cmap="RdBu", aspect="auto", vmin=-limit, vmax=limit)
        _cells(ax, values, layers, dims, "+.4f", lambda v: abs(v) > 0.6 * limit)
        ax.set_title(_wrap(label), fontsize=8)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02)
    fig.suptitle(f"{title}: difference to {baseline}", fontsize=10, y=_top(fig))
    return _save(fig, plt, path)


def best_run_map(winner: np.ndarray, margin: np.ndarray, labels: list[str], layers: list[int], dims: list[int],
                 title: str, path: str | Path) -> Path:
    """Which run is best in each cell (colour, index) and by how much it beats the runner-up (the number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = [plt.get_cmap("tab20")(i % 20) for i in range(len(labels))]
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(dims) + 3.2, 1.2 + 0.5 * len(layers)), dpi=110)
    shown = np.where(winner >= 0, winner, np.nan)
    ax.imshow(shown, cmap=ListedColormap(colours), aspect="auto", vmin=-0.5, vmax=len(labels) - 0.5)
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("dim")
    ax.set_ylabel("layer")
    for i in range(len(layers)):
        for j in range(len(dims)):
            if winner[i, j] >= 0:
                ax.text(j, i, f"#{winner[i, j] + 1}\n+{margin[i, j]:.4f}", ha="center", va="center", fontsize=6)
    ax.legend(handles=[Patch(color=c, label=f"#{k + 1} {_wrap(l, 40)}") for k, (c, l) in enumerate(zip(colours, labels))],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_title(f"{title}: best run per cell (+ margin over the runner-up)", fontsize=10)
    return _save(fig, plt, path)


def _top(fig) -> float:
    """A suptitle height above the panels' (three-line) titles."""
    return 1.0 + 0.75 / fig.get_figheight()


def _wrap(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3]) or text


def _save(fig, plt, path) -> Path:
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
