"""The (layer, dim) cell notation shared by training and evaluation.

Layers are numbered like ``hidden_states``: 0 is the embedding output, 1..L the transformer blocks.
A cell ``(l, d)`` is the pooled embedding of layer ``l`` truncated to its first ``d`` dims.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from .errors import M2DError

LAYER_SCHEMES = ("linear", "log", "uniform", "exponential")


def parse_layers(spec: str | Sequence[int] | None, num_layers: int, field: str = "layers") -> list[int]:
    """``"all"``/None -> 1..L; ``"1,3,6"`` or a list -> sorted unique layers, each checked in 0..L."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(1, num_layers + 1))
    values = _int_list(spec, field)
    for layer in values:
        if not 0 <= layer <= num_layers:
            raise M2DError(f"{field}: layer {layer} is out of range; allowed 0..{num_layers} (0 = embedding output)")
    return sorted(set(values))


def parse_dims(spec: str | Sequence[int] | None, hidden_size: int, field: str = "dims") -> list[int]:
    """``"all"``/None -> powers of two from 8 up to H, plus H; a list -> sorted unique dims in 1..H."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return default_dims(hidden_size)
    values = _int_list(spec, field)
    for dim in values:
        if not 1 <= dim <= hidden_size:
            raise M2DError(f"{field}: dim {dim} is out of range; allowed 1..{hidden_size} (the hidden size)")
    return sorted(set(values))


def default_dims(hidden_size: int, smallest: int = 8) -> list[int]:
    dims, d = [], smallest
    while d < hidden_size:
        dims.append(d)
        d *= 2
    return dims + [hidden_size]


def _int_list(spec: str | Iterable[int], field: str) -> list[int]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        values = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise M2DError(f"{field}: expected 'all' or comma-separated integers, got {spec!r}") from None
    if not values:
        raise M2DError(f"{field}: empty list; give 'all' or comma-separated integers")
    return values


def truncate(emb: torch.Tensor, dim: int, normalize: bool = True) -> torch.Tensor:
    """First ``dim`` features of ``emb`` (..., H), L2-renormalised when ``normalize`` (cosine geometry)."""
    out = emb[..., :dim]
    return F.normalize(out, p=2, dim=-1) if normalize else out


def layer_weight(scheme: str | Sequence[float], layer: int, num_layers: int, base: float = 0.5) -> float:
    """Weight of block ``layer`` (1-based) under a layer-weighting scheme.

    - ``linear``: 1/l (sentence-transformers ``AdaptiveLayerLoss``: ``loss / (1 + layer_idx)``)
    - ``log``: 1/(1 + ln l) (AnglE ESE / the Tevatron fork)
    - ``uniform``: 1
    - ``exponential``: ``base ** (L - l)`` (the last layer weighs 1, each earlier one ``base`` times less)
    - a list of L floats: explicit weights, index l-1.
    """
    if not isinstance(scheme, str):
        weights = list(scheme)
        if len(weights) != num_layers:
            raise M2DError(f"layer_weighting: explicit list needs {num_layers} weights (one per block), got {len(weights)}")
        return float(weights[layer - 1])
    if scheme in ("linear", "log") and layer < 1:
        raise M2DError(f"layer_weighting: {scheme} weights need layer >= 1, got {layer}")
    if scheme == "linear":
        return 1.0 / layer
    if scheme == "log":
        return 1.0 / (1.0 + math.log(layer))
    if scheme == "uniform":
        return 1.0
    if scheme == "exponential":
        return float(base ** (num_layers - layer))
    raise M2DError(f"layer_weighting: unknown scheme {scheme!r}; allowed {', '.join(LAYER_SCHEMES)} or a list of floats")
