"""The (layer, dim) cell grammar: one notation for CLI flags, configs, search spaces and the loss.

Layers are numbered like ``hidden_states``: 0 is the embedding output, 1..L the transformer blocks.
A cell ``(l, d)`` is the pooled embedding of layer ``l`` truncated to its first ``d`` dims.

=============  ==========================================================================
layers         ``all`` (1..L), ``none`` (where an empty set is allowed), ``a..b`` (inclusive),
               or a comma list / YAML list of expressions: ``3``, ``L-1``, ``1,3,L``
dims           ``all`` or ``pow2`` (8, 16, ... below H, plus H), or expressions: ``128,H``, ``H/2``
expressions    integers, ``L`` (blocks), ``H`` (hidden size), ``+ - * /``, ``min()``, ``max()``, parentheses
=============  ==========================================================================

Everything here is model-independent text until it meets a model's L and H; every bad value is one
:class:`M2DError` line naming the field and what is allowed.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .errors import M2DError

Expr = Union[int, str]
LAYER_SCHEMES = ("linear", "log", "uniform", "exponential")
MAX_VALUE = 10**6  # no model has a layer or dim beyond this; bigger results are typos (or ``9**9**9``)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


# -- expressions ------------------------------------------------------------------------------------------
def eval_expr(expr: Expr, L: int, H: int, field_name: str) -> int:
    """Evaluate ``3``, ``"L-1"``, ``"H/2"``, ``"min(128,H)"``: integers, L, H, + - * /, min/max, parentheses.

    A small tree walker over Python's own parser, never ``eval``: anything else (``**``, names, calls,
    floats) is an error, and so is any value beyond 10^6 (checked at every node, so nothing can grow).
    """
    if isinstance(expr, bool) or not isinstance(expr, (int, str)):
        raise M2DError(f"{field_name}: cannot read {expr!r}; use integers, L (blocks), H (hidden size), + - * /")
    if isinstance(expr, int):
        value: float = expr
    else:
        text = str(expr).strip()
        try:
            tree = ast.parse(text, mode="eval").body if len(text) <= 200 else None
        except SyntaxError:
            tree = None
        if tree is None:
            raise M2DError(f"{field_name}: cannot read {expr!r}; use integers, L, H, + - * /, min(), max()")
        value = _walk(tree, {"L": L, "H": H}, expr, field_name)
    if abs(value - round(value)) > 1e-9:
        raise M2DError(f"{field_name}: {expr!r} = {value:g} is not an integer")
    return int(round(value))


def _walk(node: ast.AST, names: dict[str, int], expr: Expr, field_name: str) -> float:
    def bad(what: str):
        return M2DError(f"{field_name}: cannot read {expr!r}: {what}; allowed integers, L, H, + - * /, "
                        "min(), max() and parentheses")

    if isinstance(node, ast.Constant) and type(node.value) is int:
        value = node.value
    elif isinstance(node, ast.Name) and node.id in names:
        value = names[node.id]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        inner = _walk(node.operand, names, expr, field_name)
        value = -inner if isinstance(node.op, ast.USub) else inner
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = (_walk(n, names, expr, field_name) for n in (node.left, node.right))
        if isinstance(node.op, ast.Div) and right == 0:
            raise M2DError(f"{field_name}: {expr!r} divides by zero")
        value = _OPS[type(node.op)](left, right)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max")
          and node.args and not node.keywords):
        args = [_walk(a, names, expr, field_name) for a in node.args]
        value = min(args) if node.func.id == "min" else max(args)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        raise bad("'**' is not supported")
    else:
        raise bad(f"unexpected {ast.unparse(node)!r}")
    if abs(value) > MAX_VALUE:
        raise M2DError(f"{field_name}: {expr!r} exceeds {MAX_VALUE:,} (no layer or dim is that large)")
    return value


def split_top(text: str) -> list[str]:
    """Split on commas outside parentheses: ``"min(128,H),H"`` -> ``["min(128,H)", "H"]``."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in parts + [current] if p.strip()]


def _items(spec: Expr | Sequence[Expr]) -> list[Expr]:
    if isinstance(spec, int):
        return [spec]
    return split_top(spec) if isinstance(spec, str) else list(spec)


# -- layers and dims --------------------------------------------------------------------------------------
def parse_layers(spec: Expr | Sequence[Expr] | None, num_layers: int, field: str = "layers",
                 allow_none: bool = False) -> list[int]:
    """Sorted unique layers, each in 0..L: ``all``/None -> 1..L, ``a..b``, a list; ``allow_none``: ``none`` or an
    empty range is [] (prior layers), otherwise an error (evaluated layers)."""
    L = num_layers
    text = spec.strip().lower() if isinstance(spec, str) else None
    if spec is None or text == "all":
        return list(range(1, L + 1))
    if text == "none" and allow_none:
        return []
    if text is not None and ".." in text:
        lo, hi = (eval_expr(part, L, 0, field) for part in spec.split("..", 1))
        layers = list(range(lo, hi + 1))
    else:
        layers = [eval_expr(item, L, 0, field) for item in _items(spec)]
    if not layers and allow_none:  # e.g. ``0..L-2`` of a one-block model
        return []
    return _in_range(layers, 0, L, field, "layer", "(0 = embedding output)",
                     "'all', a range such as '1..L-1' or comma-separated layers")


def parse_dims(spec: Expr | Sequence[Expr] | None, hidden_size: int, field: str = "dims") -> list[int]:
    """Sorted unique dims (ascending), each in 1..H: ``all``/``pow2``/None -> :func:`default_dims`, or a list."""
    H = hidden_size
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("all", "pow2")):
        return default_dims(H)
    dims = [eval_expr(item, 0, H, field) for item in _items(spec)]
    return _in_range(dims, 1, H, field, "dim", "(the hidden size)", "'all', 'H' or comma-separated dims such as '128,H'")


def _in_range(values: list[int], low: int, high: int, field: str, what: str, note: str, hint: str) -> list[int]:
    if not values:
        raise M2DError(f"{field}: empty list; give {hint}")
    for value in values:
        if not low <= value <= high:
            raise M2DError(f"{field}: {what} {value} is out of range; allowed {low}..{high} {note}")
    return sorted(set(values))


def default_dims(hidden_size: int, smallest: int = 8) -> list[int]:
    dims, d = [], smallest
    while d < hidden_size:
        dims.append(d)
        d *= 2
    return dims + [hidden_size]


def truncate(emb: torch.Tensor, dim: int, normalize: bool = True) -> torch.Tensor:
    """First ``dim`` features of ``emb`` (..., H), L2-renormalised when ``normalize`` (cosine geometry)."""
    out = emb[..., :dim]
    return F.normalize(out, p=2, dim=-1) if normalize else out


# -- layer weights ----------------------------------------------------------------------------------------
def layer_weight(scheme: str, layer: int, num_layers: int, base: float = 0.5) -> float:
    """Weight of block ``layer`` (1-based) under a layer-weighting scheme.

    - ``linear``: 1/l (sentence-transformers ``AdaptiveLayerLoss``: ``loss / (1 + layer_idx)``)
    - ``log``: 1/(1 + ln l) (AnglE ESE / the Tevatron fork)
    - ``uniform``: 1
    - ``exponential``: ``base ** (L - l)`` (the last layer weighs 1, each earlier one ``base`` times less)
    """
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


def layer_weights(scheme: str | Sequence[float], layers: Sequence[int], num_layers: int, offset: int = 0,
                  base: float = 0.5, prefix: str = "") -> dict[int, float]:
    """``{layer: weight}`` for the given layers: a scheme evaluated at ``layer + offset`` (of ``L + offset`` blocks),
    or an explicit list of L+1 weights indexed by layer 0..L (no offset)."""
    L = num_layers
    if not isinstance(scheme, str):
        weights = list(scheme)
        if len(weights) != L + 1:
            raise M2DError(f"{prefix}layer_weighting: an explicit list needs {L + 1} weights, one per layer 0..{L} "
                           f"(0 = embedding output), got {len(weights)}")
        return {layer: float(weights[layer]) for layer in layers}
    out = {}
    for layer in layers:
        x = layer + offset
        if scheme in ("linear", "log") and x < 1:
            raise M2DError(f"{prefix}layer_offset: {scheme} weighting needs layer + offset >= 1, "
                           f"layer {layer} + {offset} = {x}; raise layer_offset")
        out[layer] = layer_weight(scheme, x, L + offset, base)
    return out
