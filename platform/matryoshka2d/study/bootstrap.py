"""Paired bootstrap over test items (STS pairs, retrieval queries) for differences between (layer, dim) cells.

A resample is a vector of counts over the test items (multinomial, the same counts for every model compared:
paired). A retrieval cell's value is the count-weighted mean of its per-query scores; an STS cell's value is
Spearman's rho of the resampled pairs, computed exactly without re-sorting: with the items' order under the full
data fixed, the average rank of item i in the resample is (copies of smaller items) + (c_i + 1) / 2, and rho is
the count-weighted Pearson correlation of those ranks with the gold ranks (ties in the gold scores averaged).
"""

from __future__ import annotations

import numpy as np


def resampled_ranks(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks [V, n] within the resample ``counts`` [n] of V vectors whose ascending order is ``order``
    [V, n] (ties among copies of one item averaged; values are assumed distinct otherwise)."""
    c = counts[order].astype(np.float64)
    ranks_sorted = np.cumsum(c, axis=1) - c + (c + 1) / 2
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    return ranks


def gold_ranks(gold: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks [n] of the gold scores within the resample, ties (equal gold values) averaged."""
    order = np.argsort(gold, kind="stable")
    g = gold[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    c = counts[order].astype(np.float64)
    group = np.add.reduceat(c, starts)
    before = np.cumsum(group) - group
    per_group = before + (group + 1) / 2
    ranks = np.empty(len(gold))
    ranks[order] = np.repeat(per_group, np.diff(np.r_[starts, len(g)]))
    return ranks


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` [V, n] with ``y`` [n], items weighted by ``w`` [n]."""
    w = w.astype(np.float64)
    total = w.sum()
    mx = (x @ w / total)[:, None]
    my = float(y @ w / total)
    dx, dy = x - mx, y - my
    cov = (dx * dy) @ w
    var_x = (dx * dx) @ w
    var_y = float((dy * dy) @ w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(var_x * var_y)


class Component:
    """One test set's items behind a list of cell vectors: ``value(counts)`` gives every vector's metric."""

    def __init__(self, vectors: np.ndarray, gold: np.ndarray | None = None):
        self.vectors = np.asarray(vectors, dtype=np.float64)  # [V, n]
        self.gold = None if gold is None else np.asarray(gold, dtype=np.float64)
        self.order = np.argsort(self.vectors, axis=1, kind="stable") if self.gold is not None else None

    @property
    def size(self) -> int:
        return self.vectors.shape[1]

    def value(self, counts: np.ndarray) -> np.ndarray:
        if self.gold is None:  # per-query scores: the resample's mean
            return self.vectors @ counts / counts.sum()
        return weighted_pearson(resampled_ranks(self.order, counts), gold_ranks(self.gold, counts), counts)


def replicates(components: list[Component], weights: list[float], n: int, seed: int = 0) -> np.ndarray:
    """[n + 1, V]: row 0 the full-data values, rows 1..n bootstrap replicates, each a weighted mean over the
    components (e.g. the STS sets behind ``sts-avg``, weight 1/6 each), each component resampled independently."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n + 1):
        total = 0.0
        for comp, weight in zip(components, weights):
            counts = np.ones(comp.size) if b == 0 else rng.multinomial(comp.size, np.full(comp.size, 1 / comp.size))
            total = total + weight * comp.value(counts)
        out.append(total)
    return np.asarray(out)
