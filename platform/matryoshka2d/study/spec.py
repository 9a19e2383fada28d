"""Reproduction studies: a study YAML (``experiments/studies/``) is rows of presets + overrides at a scale. This module
reads and expands them; :mod:`matryoshka2d.sweep.reproduce` runs them as ONE Ray Tune grid (a trial per row and training seed),
:mod:`.report` tabulates and checks them.

A row's config is composed in the one order of :data:`matryoshka2d.config.LAYERS` (:func:`row_overrides`): preset,
study base, scale, ``--data``, row ``set``, data dir, ``--set``. ``each_layer`` / ``each_pair`` expand a row into one row per layer / cell (separately trained models).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import presets  # studies ship in the package; expected/ is repository-only regression data
from ..config import compose_layers, deep_merge, load_config, load_yaml, parse_overrides
from ..errors import M2DError

if TYPE_CHECKING:
    from ..resolve import ResolvedRun

EXPECTED_DIR = Path(__file__).resolve().parents[3] / "experiments" / "expected"
SCALES = ("smoke", "cpu", "gpu")
TINY = "tiny-bert"  # the smoke scale's model: a random 4 x 96 BERT written once under $M2D_HOME/models
ROW_KEYS = {"preset", "label", "set", "each_layer", "each_pair", "pairs_reference"}
TOP_KEYS = ("name", "metric", "metrics", "objective", "base", "scales", "datasets", "rows", "seed_reference", "claims")
REQUIRED = ("name", "metric", "objective", "scales", "rows")
OPTION_KEYS = ("model", "data", "method", "train", "eval", "metric", "metrics", "objective")  # a --data option's keys
CLAIM_KEYS = ("id", "text", "a", "b", "cells", "expect")
EXPECTS = ("greater", "not_less", "not_greater")
SEED_KEYS = ("file", "value", "metric", "rows")
# a study or row name: a file name, a table's first column, an item of --rows ("," and "@" are taken)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class Row:
    """One trained model of a study: ``group`` is its line in the tables (``separate`` covers several rows)."""

    label: str
    group: str
    preset: str
    overrides: dict
    title: str
    own: list[tuple[int, int | None]] | None = None  # cells this row provides (None: its whole grid); dim None = all


@dataclass
class Study:
    name: str
    path: Path
    spec: dict
    scale: str
    data: str | None = None
    sets: dict = field(default_factory=dict)
    data_dir: str | None = None  # --data-dir / $M2D_DATA_DIR, made explicit by the study driver

    @property
    def metric(self) -> str:
        return self._pick("metric")

    @property
    def metrics(self) -> list[str]:
        return list(self._pick("metrics") or [self.metric])

    @property
    def objective(self) -> str:
        return self._pick("objective")

    def _pick(self, key: str):
        if self.data and key in self.spec["datasets"][self.data]:
            return self.spec["datasets"][self.data][key]
        return self.spec.get(key)

    def layers(self) -> list[dict]:
        """The study's own layers (config.LAYERS ``study``): its base, its scale, its ``--data`` option."""
        layers = [self.spec.get("base") or {}, self.spec["scales"][self.scale] or {}]
        if self.data:
            layers.append({k: v for k, v in self.spec["datasets"][self.data].items()
                           if k in ("model", "data", "method", "train", "eval")})
        return layers

    def base(self, *rows: dict) -> dict:
        """What every row shares, composed in config.LAYERS order (``rows``: a row's own ``set`` on top of the study's
        layers), with the data dir and ``--set`` above."""
        return compose_layers(study=[*self.layers(), *rows], data_dir=self.data_dir, sets=self.sets)


def study_path(name_or_path: str) -> Path:
    return presets.find("studies", name_or_path, also=["all"])


def load_study(name_or_path: str, scale: str, data: str | None = None, sets: list[str] | None = None) -> Study:
    path = study_path(name_or_path)
    spec = read_study(path)
    where = f"study {path.name}"
    if scale not in spec["scales"]:
        raise M2DError(f"--scale: {scale!r} not in {where}; allowed: {', '.join(spec['scales'])}")
    if data and data not in (spec.get("datasets") or {}):
        have = ", ".join(spec.get("datasets") or {}) or "none"
        raise M2DError(f"--data: {data!r} is not a dataset option of {where}; allowed: {have}")
    return Study(spec["name"], path, spec, scale, data, parse_overrides(sets))


# -- the study YAML, read and checked once (every path that reads a study comes through here) -------------------
def read_study(path: Path) -> dict:
    """A study YAML with its shape checked: a wrong key, type or reference is one line naming it and what is allowed,
    never a traceback later (or a claim quietly "not run" after all the training)."""
    spec = load_yaml(path, what="study", shape="top level must be a mapping (name, metric, objective, scales, rows)")
    where = f"study {path.name}"
    try:
        _check_spec(spec)
    except M2DError as err:
        raise M2DError(f"{where}: {err}") from None
    return spec


def _check_spec(spec: dict) -> None:
    unknown = [k for k in spec if k not in TOP_KEYS]
    if unknown:
        raise M2DError(f"unknown key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    for key in REQUIRED:
        if key not in spec:
            raise M2DError(f"missing {key!r}")
    _name(spec["name"], "name")
    _metrics(spec)
    _layer(spec.get("base"), "base")
    scales = _mapping(spec["scales"], "scales", "a mapping of scale -> config sections, e.g. {smoke: {train: ...}}")
    if not scales:
        raise M2DError("scales: empty; allowed: smoke, cpu, gpu")
    for scale, layer in scales.items():
        _layer(layer, f"scales.{scale}")
    for option, layer in _mapping(spec.get("datasets") or {}, "datasets", "a mapping of --data option -> "
                                  "{data, eval, metric, ...}").items():
        where = f"datasets.{option}"
        _mapping(layer, where, f"a mapping with keys {', '.join(OPTION_KEYS)}")
        bad = [k for k in layer if k not in OPTION_KEYS]
        if bad:
            raise M2DError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(OPTION_KEYS)}")
        _layer({k: v for k, v in layer.items() if k not in ("metric", "metrics", "objective")}, where)
        _metrics(layer, where + ".")
    groups = _rows(spec["rows"])
    _seed_reference(spec.get("seed_reference"), groups)
    _claims(spec.get("claims"), groups)


def _mapping(value: Any, where: str, allowed: str) -> dict:
    if not isinstance(value, dict):
        raise M2DError(f"{where}: expected {allowed}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """What a wrong value is, for the error line."""
    if value is None or isinstance(value, list):
        return "nothing" if value is None else "a list"
    return f"the text {value[:40]!r}" if isinstance(value, str) else f"{type(value).__name__} {repr(value)[:40]}"


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise M2DError(f"{where}: {value!r} is not a name; allowed letters, digits and _ . + - (no ',' or '@')")
    return value


def _layer(value: Any, where: str) -> None:
    """A partial config (base, a scale, a --data option, a row's ``set``): config sections, each a mapping of fields."""
    if value is None:
        return
    for section, fields in _mapping(value, where, "a mapping of config sections (model, data, method, train, "
                                    "eval)").items():
        _mapping(fields, f"{where}.{section}", "a mapping of fields")


def _metric(value: Any, where: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[^/\s]+/[^/\s]+", value):
        raise M2DError(f"{where}: {value!r} is not <dataset>/<metric>, e.g. sts-avg/spearman or scifact/ndcg@10")


def _metrics(spec: dict, prefix: str = "") -> None:
    if "metric" in spec:
        _metric(spec["metric"], prefix + "metric")
    if "metrics" in spec:
        if not isinstance(spec["metrics"], list) or not spec["metrics"]:
            raise M2DError(f"{prefix}metrics: expected a list of <dataset>/<metric>, got {_kind(spec['metrics'])}")
        for i, metric in enumerate(spec["metrics"]):
            _metric(metric, f"{prefix}metrics[{i}]")
    if "objective" in spec and not isinstance(spec["objective"], str):
        raise M2DError(f"{prefix}objective: expected <dataset>/<metric>/<summary>, got {_kind(spec['objective'])}")


def _rows(rows: Any) -> list[str]:
    """The rows' shapes; returns their names (the groups claims and the seed's numbers may name)."""
    _mapping(rows, "rows", "a mapping of row name -> {preset: ..., label, set, each_layer | each_pair}")
    if not rows:
        raise M2DError("rows: empty; a study needs at least one row, e.g. full: {preset: full}")
    for name, row in rows.items():
        _name(name, "row name")
        unknown = sorted(set(row) - ROW_KEYS) if isinstance(row, dict) else []
        if not isinstance(row, dict) or "preset" not in row or unknown:
            raise M2DError(f"row {name}: needs a preset, e.g. {{preset: full}}; allowed keys "
                           f"{', '.join(sorted(ROW_KEYS))}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                           + ("" if isinstance(row, dict) else f"; got {_kind(row)}"))
        _row(name, row)
    return list(rows)


def _row(name: str, row: dict) -> None:
    where = f"row {name}"
    if not isinstance(row["preset"], str):
        raise M2DError(f"{where}: preset: expected a preset name or YAML path, got {_kind(row['preset'])}")
    if "label" in row and not isinstance(row["label"], str):
        raise M2DError(f"{where}: label: expected text, got {_kind(row['label'])}")
    _layer(row.get("set"), f"{where}: set")
    if "each_layer" in row and "each_pair" in row:
        raise M2DError(f"{where}: each_layer and each_pair exclude each other; give one")
    layers = row.get("each_layer")
    if "each_layer" in row and not (_expr(layers) or isinstance(layers, list) and layers and all(map(_expr, layers))):
        raise M2DError(f"{where}: each_layer: expected layers such as 1..L-1 or [1, 2], got {_kind(layers)}")
    if "each_pair" in row:
        pairs = row["each_pair"]
        if not isinstance(pairs, list) or not pairs or not all(map(_pair, pairs)):
            raise M2DError(f"{where}: each_pair: expected a list of [layer, dim] pairs, e.g. [[2, 32], [4, 64]], "
                           f"got {_kind(pairs)}")
    if row.get("pairs_reference") is not None and ("each_pair" not in row or not _pair(row["pairs_reference"])):
        raise M2DError(f"{where}: pairs_reference: expected [layer, dim] (with each_pair), got "
                       f"{_kind(row['pairs_reference'])}")


def _expr(value: Any) -> bool:
    """A layer or dim: an integer or an expression of L and H (bool is no integer here)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_expr, value))


def _seed_reference(ref: Any, groups: list[str]) -> None:
    if ref is None:
        return
    _mapping(ref, "seed_reference", f"a mapping with keys {', '.join(SEED_KEYS)}")
    bad = [k for k in ref if k not in SEED_KEYS] or [k for k in ("file", "value", "rows") if k not in ref]
    if bad:
        raise M2DError(f"seed_reference: {'unknown' if bad[0] in ref else 'missing'} key {bad[0]!r}; "
                       f"allowed: {', '.join(SEED_KEYS)}")
    for key in ("file", "value"):
        if not isinstance(ref[key], str):
            raise M2DError(f"seed_reference.{key}: expected text, got {_kind(ref[key])}")
    for group, match in _mapping(ref["rows"], "seed_reference.rows", "a mapping of row -> {column: value}").items():
        if group not in groups:
            raise M2DError(f"seed_reference.rows: {group!r} is not a row; rows: {', '.join(groups)}")
        _mapping(match, f"seed_reference.rows.{group}", "a mapping of column -> value")


def _claims(claims: Any, groups: list[str]) -> None:
    if claims is None:
        return
    if not isinstance(claims, list):
        raise M2DError(f"claims: expected a list of {{{', '.join(CLAIM_KEYS)}}}, got {_kind(claims)}")
    seen = set()
    for i, claim in enumerate(claims):
        where = f"claims[{i}]" if not isinstance(claim, dict) or "id" not in claim else f"claim {claim['id']}"
        _mapping(claim, where, f"a mapping with keys {', '.join(CLAIM_KEYS)}")
        bad = [k for k in claim if k not in CLAIM_KEYS] or [k for k in CLAIM_KEYS if k != "cells" and k not in claim]
        if bad:
            raise M2DError(f"{where}: {'unknown' if bad[0] in claim else 'missing'} key {bad[0]!r}; "
                           f"allowed: {', '.join(CLAIM_KEYS)}")
        if str(claim["id"]) in seen:
            raise M2DError(f"{where}: the id is used twice")
        seen.add(str(claim["id"]))
        if not isinstance(claim["text"], str):
            raise M2DError(f"{where}: text: expected text, got {_kind(claim['text'])}")
        for side in ("a", "b"):
            if claim[side] not in groups:
                raise M2DError(f"{where}: {side}: {claim[side]!r} is not a row; rows: {', '.join(groups)}")
        if claim["a"] == claim["b"]:
            raise M2DError(f"{where}: a and b are the same row {claim['a']!r}; a claim compares two rows")
        try:
            cell_set(claim.get("cells", "all"))
        except M2DError as err:
            raise M2DError(f"{where}: {err}") from None
        if claim["expect"] not in EXPECTS:
            raise M2DError(f"{where}: expect: {claim['expect']!r}; allowed: {', '.join(EXPECTS)}")


def cell_set(spec: Any) -> list[tuple[str, int | None]]:
    """A claim's cells, parsed: ``all``, ``sublayer`` (layer < the last), ``own`` (a separate model's own cells),
    ``dims<N``, ``dims>=N``, joined with ``_`` (``sublayer_dims>=128``)."""
    allowed = "allowed all, sublayer, own, dims<N, dims>=N joined with _"
    if not isinstance(spec, str) or not spec:
        raise M2DError(f"cells: expected text such as sublayer_dims>=128; {allowed}")
    parts: list[tuple[str, int | None]] = []
    for part in spec.split("_"):
        found = re.fullmatch(r"(dims<|dims>=)(\d+)", part)
        if part in ("all", "sublayer", "own"):
            parts.append((part, None))
        elif found:
            parts.append((found.group(1), int(found.group(2))))
        else:
            raise M2DError(f"cells: unknown cell set {part!r} in {spec!r}; {allowed}")
    return parts


def select_cells(spec: str, cells: set[tuple[int, int]], own: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The cells of :func:`cell_set` ``spec`` among ``cells`` (``own``: the row's own cells)."""
    parts = cell_set(spec)
    if not cells:
        return []
    last = max(l for l, _ in cells)
    chosen = set(cells)
    for part, n in parts:
        if part == "sublayer":
            chosen = {c for c in chosen if c[0] < last}
        elif part == "own":
            chosen &= own
        elif part == "dims<":
            chosen = {c for c in chosen if c[1] < n}
        elif part == "dims>=":
            chosen = {c for c in chosen if c[1] >= n}
    return sorted(chosen)


def model_name(base: dict) -> str:
    """The model of a study's base config; ``tiny-bert`` is written on first use (seeded: the same weights)."""
    name = (base.get("model") or {}).get("name", "minilm-l6")
    if name != TINY:
        return name
    from ..config import m2d_home
    from ..testing import make_tiny_bert

    path = m2d_home() / "models" / "tiny-bert-4x96"
    if not (path / "config.json").is_file():
        staged = path.with_name(path.name + f".{os.getpid()}")
        make_tiny_bert(staged, num_layers=4, hidden_size=96, num_heads=4, intermediate_size=192, seed=0)
        try:
            os.replace(staged, path)
        except OSError:  # another driver (two studies at once) moved its identical copy in first
            if not (path / "config.json").is_file():
                raise
            shutil.rmtree(staged, ignore_errors=True)
    return str(path)


def expand_rows(study: Study) -> list[Row]:
    """The study's rows for its model: ``each_layer`` and ``each_pair`` become one row per layer / cell."""
    from ..cells import parse_layers
    from ..methods import MethodConfig
    from ..resolve import model_shape

    base = study.base()
    shape = model_shape(model_name(base))
    L, H = shape.num_layers, shape.hidden_size
    rows: list[Row] = []
    for group, spec in study.spec["rows"].items():
        title = spec.get("label", group)
        if "each_layer" in spec:
            for layer in parse_layers(spec["each_layer"], L, f"study {study.path.name}: row {group}: each_layer"):
                over = _fill(spec.get("set") or {}, l=layer)
                rows.append(Row(f"{group}@{layer}", group, spec["preset"], over, title, [(layer, None)]))
        elif "each_pair" in spec:
            ref = spec.get("pairs_reference")
            for pair in spec["each_pair"]:
                try:
                    method = MethodConfig(pairs=[tuple(pair)], pairs_reference=tuple(ref) if ref else None)
                    layer, dim = method.resolve(L, H).pairs[0]
                except ValueError as err:  # M2DError, or pydantic's: an expression the model cannot hold
                    raise M2DError(f"study {study.path.name}: row {group}: each_pair {pair}: {err}") from None
                over = deep_merge(spec.get("set") or {}, {"method": {"pairs": [[layer, dim]], "pairs_reference": None}})
                rows.append(Row(f"{group}@{layer}x{dim}", group, spec["preset"], over, title, [(layer, dim)]))
        else:
            rows.append(Row(group, group, spec["preset"], copy.deepcopy(spec.get("set") or {}), title))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise M2DError(f"study {study.path.name}: rows expand to duplicate labels {labels}")
    return rows


def _fill(value: Any, **names: int) -> Any:
    """``"{l}"`` placeholders in a row's overrides -> the expanded row's value."""
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in names:
        return names[value[1:-1]]
    return value


def row_overrides(study: Study, row: Row) -> dict:
    """A row's layers above its preset (config.LAYERS): study base, scale, --data, the model made concrete, the row's
    ``set``, then the data dir and ``--set``."""
    model = {"model": {"name": model_name(study.base())}}
    return study.base(model, row.overrides)


def row_config(study: Study, row: Row):
    return load_config(row.preset, row_overrides(study, row))


# -- before any work: what the run will check, the dry run checks too ----------------------------------------
def check_study(study: Study, rows: list[Row]) -> dict[str, "ResolvedRun"]:
    """Everything a study run checks before it trains, for the real run and ``--dry-run`` alike (the study file's
    shape, claims included, was checked when it was read): every row's config resolves against the model and its data
    is present, the objective parses, every metric (and the objective's) is evaluated by every row, and every row has
    cells in the tables. Returns each row's resolved run by label."""
    from ..resolve import check_run

    if not rows:
        raise M2DError("--rows: no row selected; give row names such as full,v2")
    runs = {}
    for row in rows:
        try:
            runs[row.label] = check_run(row_config(study, row))
        except M2DError as err:
            raise M2DError(f"row {row.label}: {err}") from None
    where = f"study {study.path.name}"
    wanted = [("metric", study.metric)] + [("metrics", m) for m in study.metrics]
    wanted.append(("objective", _objective(study.objective, where)))
    for row in rows:
        have, loose = evaluated(runs[row.label].config)
        for key, metric in wanted:
            if metric not in have and not (loose and _by_path(metric)):
                raise M2DError(f"{where}: {key} {metric!r} is not evaluated by row {row.label}; it evaluates "
                               f"{', '.join(sorted(have))} (eval.datasets)")
    cells, _ = planned_cells(rows, runs)
    for group, provided in cells.items():
        if not provided:
            raise M2DError(f"{where}: row {group}: none of its own cells is evaluated (eval.layers, eval.dims); its "
                           f"line of the tables would be empty")
    return runs


def idle_claims(study: Study, rows: list[Row], runs: dict) -> list[str]:
    """The claims that will be "not run" with these rows at this scale, and why: a row not selected (``--rows``), or
    no shared cell in the claim's set (a small model: no dim >= 128 at smoke scale). Notes, not errors."""
    cells, own = planned_cells(rows, runs)
    notes = []
    for claim in study.spec.get("claims") or []:
        a, b, spec = claim["a"], claim["b"], claim.get("cells", "all")
        if a not in cells or b not in cells:
            notes.append(f"claim {claim['id']} needs rows {a} and {b}")
        elif not select_cells(spec, cells[a] & cells[b], own[a]):
            notes.append(f"claim {claim['id']}: no cell of {spec!r} is shared by rows {a} and {b} at this scale")
    return notes


def _objective(objective: str, where: str) -> str:
    """The study's objective parsed as the sweep driver parses ``--objective``; returns its ``dataset/metric``."""
    from ..evaluate.grid import parse_objectives

    try:
        (name, _), = parse_objectives([objective])
    except M2DError as err:
        raise M2DError(f"{where}: objective: {str(err).removeprefix('--objective: ')}") from None
    return name.rsplit("/", 1)[0]


def _by_path(metric: str) -> bool:
    """Whether ``metric`` may name a set given by path: not a named set, and a metric some set evaluates."""
    from ..data.registry import REGISTRY
    from ..evaluate import RETRIEVAL_METRICS, STS_AVG

    dataset, name = metric.split("/")
    return dataset not in REGISTRY and dataset != STS_AVG and name in ("spearman", *RETRIEVAL_METRICS)


def evaluated(cfg) -> tuple[set[str], bool]:
    """The ``dataset/metric`` names a row's grid.csv will hold, and whether it also evaluates sets given by path (whose
    names are known only once they are read)."""
    from ..data.registry import REGISTRY, expand_eval_names
    from ..evaluate import RETRIEVAL_METRICS, STS_AVG

    names, average = expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)
    have, loose = set(), False
    for name in names + ([STS_AVG] if average else []):
        kind = "sts" if name == STS_AVG else getattr(REGISTRY.get(name), "kind", None)
        loose |= kind is None
        have |= {f"{name}/{m}" for m in {"sts": ("spearman",), "retrieval": RETRIEVAL_METRICS}.get(kind, ())}
    return have, loose


def planned_cells(rows: list[Row], runs: dict) -> tuple[dict[str, set], dict[str, set]]:
    """Per group, the cells its rows will put in the tables (their evaluated grid, or their own layer / cell), and
    its own cells (a per-layer model's full width: the largest evaluated dim), as the report will count them."""
    cells: dict[str, set] = {}
    own: dict[str, set] = {}
    for row in rows:
        run = runs[row.label]
        grid = {(l, d) for l in run.eval_layers for d in run.eval_dims}
        mine = grid if row.own is None else {(l, d) for l, d in grid
                                            if any(l == ol and od in (None, d) for ol, od in row.own)}
        cells.setdefault(row.group, set()).update(mine)
        own.setdefault(row.group, set()).update((l, max(run.eval_dims) if d is None else d) for l, d in row.own or [])
    return cells, own


# -- the command -----------------------------------------------------------------------------------------------
