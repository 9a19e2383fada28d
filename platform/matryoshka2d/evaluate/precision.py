"""Precision, the grid's third axis: names, storage bytes, the metric-name convention and quantization.

A row's precision rides in its metric name, so ``grid.csv`` keeps its schema: float32 keeps the plain name
(``spearman``, ``ndcg@10``), any other precision is appended after a slash (``spearman/int8``,
``ndcg@10/binary``, ``ndcg@10/binary+rescore``). ``+rescore`` (retrieval only) searches the quantized corpus for
``rescore_multiplier`` x more candidates and re-ranks them by the float query against the stored quantized
documents, as sentence-transformers' ``semantic_search_usearch`` does; what is stored per document is the base
precision, so it costs the same bytes. Quantization is sentence-transformers' ``quantize_embeddings``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import M2DError

FLOAT = "float32"
RESCORE = "+rescore"
BYTES_PER_VALUE = {"float32": 4, "int8": 1, "binary": 1 / 8}
PRECISIONS = (*BYTES_PER_VALUE, "int8" + RESCORE, "binary" + RESCORE)


def base_precision(precision: str) -> str:
    """The stored precision: ``binary+rescore`` -> ``binary``."""
    return precision.removesuffix(RESCORE)


def is_rescored(precision: str) -> bool:
    return precision.endswith(RESCORE)


def bytes_per_vector(dim: int, precision: str) -> int:
    """Bytes to store one ``dim``-dim vector at ``precision`` (binary packs 8 values a byte, padded to whole bytes)."""
    base = base_precision(precision)
    if base not in BYTES_PER_VALUE:
        raise M2DError(f"precision: unknown {precision!r}; allowed {', '.join(PRECISIONS)}")
    return math.ceil(dim * BYTES_PER_VALUE[base])


def metric_name(metric: str, precision: str) -> str:
    """``spearman`` at float32, ``spearman/int8`` otherwise."""
    return metric if precision == FLOAT else f"{metric}/{precision}"


def split_metric(name: str) -> tuple[str, str]:
    """``"ndcg@10/binary"`` -> ``("ndcg@10", "binary")``; a plain name is float32."""
    metric, sep, precision = name.partition("/")
    if not sep:
        return name, FLOAT
    if precision not in PRECISIONS or precision == FLOAT:
        raise M2DError(f"metric {name!r}: unknown precision {precision!r}; allowed "
                       f"{', '.join(p for p in PRECISIONS if p != FLOAT)} (float32 has no suffix)")
    return metric, precision


def parse_precisions(spec: str | Sequence[str] | None, field: str = "precisions") -> list[str]:
    """``"float32,int8,binary"`` or a list -> unique names in the order given; None -> float32 only."""
    if spec is None:
        return [FLOAT]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(p).strip().lower() for p in items if str(p).strip()]
    if not names:
        raise M2DError(f"{field}: empty list; allowed {', '.join(PRECISIONS)}")
    for name in names:
        if name not in PRECISIONS:
            raise M2DError(f"{field}: unknown precision {name!r}; allowed {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(names))


def int8_ranges(calibration: np.ndarray) -> np.ndarray:
    """Per-dim (min, max) ``[2, d]``: what ``quantize_embeddings`` computes from ``calibration_embeddings``."""
    return np.vstack((calibration.min(axis=0), calibration.max(axis=0)))


def quantize(emb: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """int8 (with ``ranges``, else calibrated on ``emb`` itself) or binary (packed bits of ``emb > 0``, uint8)."""
    from sentence_transformers.util.quantization import quantize_embeddings

    base = base_precision(precision)
    if base == "int8":
        return quantize_embeddings(emb, precision="int8", ranges=ranges)
    if base == "binary":
        return quantize_embeddings(emb, precision="ubinary")
    raise M2DError(f"precision: cannot quantize to {precision!r}; allowed int8, binary")


def dequantize_int8(q: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 codes back to float64 in the embedding's coordinates (ST's ``_dequantize_embeddings``, for rescoring)."""
    ranges = ranges.astype(np.float32, copy=False)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    return (q.astype(np.float64) + 128) * steps + ranges[0]
