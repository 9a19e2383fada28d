"""Search spaces: dotted config keys -> domains, read from a space YAML and checked before Ray starts. No Ray here.

A space file maps each swept key to one domain, ``{choice: [...]}`` (or ``{choice: {label: value}}`` for lists and
bundles), ``{uniform|loguniform: [low, high]}`` or ``{int: [low, high]}``; ``evaluate_first`` lists trials Optuna
runs before it samples. The keys are the config's own (``method.layer_weighting``), so a sweep is a search over
config fields and every value goes through the one config validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import deep_merge, load_yaml, numeric_kind
from ..errors import M2DError

SCALARS = (str, int, float, bool, type(None))
KINDS = ("choice", "uniform", "loguniform", "int")
ROW = "row"  # a study's grid key: its label picks one row (preset + overrides) of TrialSetup.rows


# -- domains ----------------------------------------------------------------------------------------
@dataclass
class Param:
    """One swept config key. ``labels`` are what Optuna sees; ``values`` maps a label to its config value."""

    key: str
    kind: str
    labels: list[Any] = field(default_factory=list)  # choice labels (scalars)
    values: dict[Any, Any] = field(default_factory=dict)  # label -> value, only where they differ
    low: float = 0.0
    high: float = 0.0

    def domain(self):
        """The Tune domain (Ray is imported only here: the rest of a space is plain data)."""
        from ray import tune

        if self.kind == "grid":  # every label once (a reproduction study's rows and seeds)
            return tune.grid_search(self.labels)
        if self.kind == "choice":
            return tune.choice(self.labels)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(int(self.low), int(self.high) + 1)  # YAML bounds are inclusive

    def value(self, label: Any) -> Any:
        return self.values.get(label, label)


@dataclass
class SearchSpace:
    """Dotted config keys -> domains, read from a space file (``experiments/spaces/*.yaml``)."""

    path: str
    params: list[Param]
    first: list[dict[str, Any]] = field(default_factory=list)  # trials Optuna runs before sampling (labels)

    def tune_space(self) -> dict[str, Any]:
        return {p.key: p.domain() for p in self.params}

    def overrides(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Sampled labels -> one nested override dict; shallow keys first, so ``method.kl.weight`` beats ``method.kl``."""
        out: dict[str, Any] = {}
        for p in sorted(self.params, key=lambda p: p.key.count(".")):
            if p.key in sampled and p.key != ROW:
                out = deep_merge(out, nest({p.key: p.value(sampled[p.key])}))
        return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"method.kl.weight": 1}`` -> ``{"method": {"kl": {"weight": 1}}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def load_space(path: str | Path, validate: Callable[[dict], None] | None = None) -> SearchSpace:
    """Parse and check a space file; every problem is one ``space <file>: ...`` line.

    ``validate(overrides)`` is called with each choice (and each range end) so that an unknown key or a
    value the config rejects fails here, before Ray starts, not in trial 7 an hour later.
    """
    path = Path(path)
    where = f"space {path}"
    if not path.is_file():
        raise M2DError(f"{where}: file not found")
    shape = "expected a mapping of dotted config keys to {choice|uniform|loguniform|int: ...}"
    data = load_yaml(path, "space", shape)
    if not data:
        raise M2DError(f"{where}: {shape}")
    first = data.pop("evaluate_first", None) or []
    params = [_param(where, str(key), spec) for key, spec in data.items()]
    first = _first_points(where, first, params)
    if validate is not None:
        for p in params:
            candidates = [(label, p.value(label)) for label in p.labels] if p.kind == "choice" else \
                [(x, int(x) if p.kind == "int" else x) for x in (p.low, p.high)]
            for label, value in candidates:
                try:
                    validate(nest({p.key: value}))
                except M2DError as err:
                    raise M2DError(f"{where}: {p.key}={_short(label)}: {err}") from None
    return SearchSpace(str(path), params, first)


def _first_points(where: str, points: Any, params: list[Param]) -> list[dict[str, Any]]:
    """``evaluate_first: [{key: label, ...}, ...]``: every key a swept one, every label in its domain; keys left
    out get the domain's first label / lower bound (Optuna needs complete points)."""
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise M2DError(f"{where}: evaluate_first: expected a list of {{key: label}} mappings")
    by_key = {p.key: p for p in params}
    out = []
    for point in points:
        full = {}
        for key, param in by_key.items():
            value = point.get(key, param.labels[0] if param.kind == "choice" else param.low)
            ok = value in param.labels if param.kind == "choice" else \
                isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high
            if not ok:
                allowed = ", ".join(map(str, param.labels)) if param.kind == "choice" else f"{param.low}..{param.high}"
                raise M2DError(f"{where}: evaluate_first: {key}={_short(value)} is not in its domain ({allowed})")
            full[key] = value
        unknown = set(point) - set(by_key)
        if unknown:
            raise M2DError(f"{where}: evaluate_first: {', '.join(sorted(unknown))} is not a swept key")
        out.append(full)
    return out


def _param(where: str, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise M2DError(f"{where}: {key}: expected exactly one of {', '.join(KINDS)}, e.g. {{choice: [a, b]}}, "
                       f"got {_short(spec)}")
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if isinstance(arg, dict) and arg:  # {label: value}: readable labels for lists / bundles
            labels = [str(label) for label in arg]
            return Param(key, kind, labels, dict(zip(labels, arg.values())))
        if not isinstance(arg, list) or not arg:
            raise M2DError(f"{where}: {key}: choice needs a non-empty list or a {{label: value}} mapping")
        labels, values = [], {}
        for item in arg:
            label = item if isinstance(item, SCALARS) else json.dumps(item, separators=(",", ":"))
            if not isinstance(item, SCALARS):
                values[label] = item
            labels.append(label)
        if len({json.dumps(x, sort_keys=True, default=str) for x in labels}) != len(labels):
            raise M2DError(f"{where}: {key}: choice has duplicate values")
        return Param(key, kind, labels, values)
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             for x in arg)):
        raise M2DError(f"{where}: {key}: {kind} needs [low, high] numbers, got {_short(arg)}")
    low, high = arg
    field = numeric_kind(key)  # None: unknown key, reported by validation with the field's name
    if kind in ("uniform", "loguniform") and field == "int":
        raise M2DError(f"{where}: {key}: {kind} samples floats but {key} is an integer field; use int: [low, high]")
    if field == "other":
        raise M2DError(f"{where}: {key}: {kind} samples numbers but {key} is not a numeric field; use choice: [...]")
    if kind == "int" and not all(isinstance(x, int) for x in arg):
        raise M2DError(f"{where}: {key}: int needs integer bounds, got {_short(arg)}")
    if not low < high:
        raise M2DError(f"{where}: {key}: {kind} needs low < high, got {_short(arg)}")
    if kind == "loguniform" and low <= 0:
        raise M2DError(f"{where}: {key}: loguniform needs low > 0, got {_short(arg)}")
    return Param(key, kind, low=low, high=high)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


