"""One cell at a quantized precision (int8, binary), from the same truncated vectors the float32 cell scores.

STS does what sentence-transformers' ``EmbeddingSimilarityEvaluator(precision=...)`` does, so the two agree
exactly: int8 ranges calibrated on the set's own sentences, binary as {0,1} bit vectors, each pair scored by the
cosine of the codes (ST's ``pairwise_cos_sim``). Retrieval follows ``semantic_search_usearch``: int8 ranges
calibrated on the corpus and applied to the queries too, ranked by the int8 dot product; binary ranked by Hamming
distance (run score ``-hamming``); ``+rescore`` takes ``multiplier`` x more candidates and re-ranks them by the float
query dotted with the stored document codes (bits as 0/1, int8 dequantized), as ST does. Quantized scores are
integers and tie often, so the search ranks ties as trec_eval does (doc id descending): runs are deterministic
and the top-k cut agrees with pytrec_eval's own ordering.
"""

from __future__ import annotations

import numpy as np
import torch

from . import topk
from .precision import base_precision, dequantize_int8, int8_ranges, is_rescored, quantize


def sts_scores(vecs: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, precision: str) -> np.ndarray:
    """Pair scores at ``precision`` from the cell's unit vectors ``vecs`` [N_unique, d] (float32)."""
    from sentence_transformers.util import pairwise_cos_sim

    codes = quantize(vecs, precision)  # int8 calibrated on the set's sentences, as ST's evaluator does
    if base_precision(precision) == "binary":
        codes = np.unpackbits(codes, axis=1)  # the padding bits are 0, as in ST's evaluator: no effect on cosine
    return pairwise_cos_sim(codes[idx1].astype(np.float32), codes[idx2].astype(np.float32)).numpy()


def doc_ranks(doc_ids: list[str]) -> np.ndarray:
    """Each doc's position in ascending id order (float64): the larger ranks first among equal scores."""
    ranks = np.empty(len(doc_ids), dtype=np.float64)
    ranks[sorted(range(len(doc_ids)), key=doc_ids.__getitem__)] = np.arange(len(doc_ids))
    return ranks


def _bits(codes: np.ndarray, dim: int) -> np.ndarray:
    return np.unpackbits(codes, axis=-1)[..., :dim]


def _exact_search(q: np.ndarray, c: np.ndarray, k: int, ranks: np.ndarray, chunk_size: int):
    """Top-``k`` by the integer score ``q @ c.T``, ties by ``ranks`` (larger first).

    The key ``score * N + rank`` is one matmul of augmented vectors ``[q * N, 1] . [c, rank]``, exact in float64
    (integers far below 2**53), so :func:`.topk.search` serves unchanged.
    """
    n = float(c.shape[0])
    keys, idx = topk.search(torch.from_numpy(np.hstack([q * n, np.ones((len(q), 1))])),
                                 torch.from_numpy(np.hstack([c, ranks[:, None]])), k, chunk_size)
    idx = idx.numpy()
    return np.rint((keys.numpy() - ranks[idx]) / n), idx


def search(queries: np.ndarray, corpus: np.ndarray, precision: str, k: int, ranks: np.ndarray,
           multiplier: int = 4, chunk_size: int = 25_000) -> tuple[np.ndarray, np.ndarray]:
    """(scores, doc indices) [Q, k] at ``precision`` from the cell's float vectors (queries [Q, d], corpus [N, d])."""
    base, dim = base_precision(precision), corpus.shape[1]
    if base == "int8":
        ranges = int8_ranges(corpus)
        docs, q_codes = quantize(corpus, base, ranges), quantize(queries, base, ranges)
        c_vals, q_vals = docs.astype(np.float64), q_codes.astype(np.float64)
    else:
        docs, q_codes = quantize(corpus, base), quantize(queries, base)
        c_vals, q_vals = 2.0 * _bits(docs, dim) - 1, 2.0 * _bits(q_codes, dim) - 1  # +-1: dot = dim - 2 hamming
    depth = min(k * multiplier, corpus.shape[0]) if is_rescored(precision) else k
    scores, idx = _exact_search(q_vals, c_vals, depth, ranks, chunk_size)
    if base == "binary":
        scores = (scores - dim) / 2  # -hamming
    if not is_rescored(precision):
        return scores, idx
    rescored = np.empty(idx.shape, dtype=np.float64)
    step = max(1, 8_000_000 // max(1, idx.shape[1] * dim))  # queries per block: ~64 MB of candidates
    for start in range(0, len(queries), step):
        block = docs[idx[start:start + step]]
        cand = _bits(block, dim).astype(np.int64) if base == "binary" else dequantize_int8(block, ranges)
        rescored[start:start + step] = np.einsum("ij,ikj->ik", queries[start:start + step], cand)
    order = np.lexsort((ranks[idx], rescored), axis=1)[:, ::-1][:, :k]  # rescored score, then trec_eval's tie order
    return np.take_along_axis(rescored, order, 1), np.take_along_axis(idx, order, 1)
