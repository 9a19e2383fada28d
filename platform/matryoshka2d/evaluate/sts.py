"""STS scoring: Spearman between gold scores and the cosine of each pair, per (layer, dim) cell.

Sentences are deduplicated before encoding (STS sets repeat many sentences), and pairs index into the
unique list, so one encoding serves every cell.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from ..cells import truncate
from ..data.types import STSPairs
from . import quantized
from .precision import FLOAT, is_rescored, metric_name


def unique_sentences(pairs: STSPairs) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(unique texts, index of sentence1 per pair, index of sentence2 per pair)."""
    position: dict[str, int] = {}
    for text in (*pairs.sentences1, *pairs.sentences2):
        position.setdefault(text, len(position))
    idx1 = np.fromiter((position[t] for t in pairs.sentences1), dtype=np.int64, count=len(pairs))
    idx2 = np.fromiter((position[t] for t in pairs.sentences2), dtype=np.int64, count=len(pairs))
    return list(position), idx1, idx2


def pair_cosines(emb: torch.Tensor, idx1: np.ndarray, idx2: np.ndarray, dim: int) -> np.ndarray:
    """Cosine of each pair on the first ``dim`` features of ``emb`` [N_unique, H]."""
    vecs = truncate(emb, dim, normalize=True)
    return (vecs[torch.as_tensor(idx1)] * vecs[torch.as_tensor(idx2)]).sum(-1).numpy()


def spearman(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman's rho (scipy), NaN when undefined (e.g. constant predictions)."""
    with warnings.catch_warnings():  # constant input is reported as NaN, the warning adds nothing
        warnings.simplefilter("ignore")
        rho = spearmanr(np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)).statistic
    return float(rho) if not (rho is None or math.isnan(rho)) else float("nan")


def score_cell(shared: dict, pos: int, dim: int) -> dict:
    """Metrics of one cell; ``shared`` holds ``emb`` [layers, N_unique, H] (numpy), ``idx1``, ``idx2``, ``gold``.
    With ``per_item`` the pair cosines come back too (``"_items"``), for a paired bootstrap over pairs.
    ``precisions`` (default float32) adds ``spearman/<precision>`` (``+rescore`` is retrieval only: skipped)."""
    emb = torch.from_numpy(shared["emb"][pos])
    precisions = shared.get("precisions") or (FLOAT,)
    out: dict = {}
    items: dict = {}
    if FLOAT in precisions:
        items["cosine"] = pair_cosines(emb, shared["idx1"], shared["idx2"], dim)
        out["spearman"] = spearman(items["cosine"], shared["gold"])
    extra = [p for p in precisions if p != FLOAT and not is_rescored(p)]
    if extra:
        vecs = truncate(emb, dim, normalize=True).numpy()
        for precision in extra:
            scores = quantized.sts_scores(vecs, shared["idx1"], shared["idx2"], precision)
            out[metric_name("spearman", precision)] = spearman(scores, shared["gold"])
            items[metric_name("cosine", precision)] = scores
    if shared.get("per_item"):
        out["_items"] = {name: values.astype(np.float32) for name, values in items.items()}
    return out
