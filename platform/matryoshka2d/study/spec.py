"""Reproduction studies: a study YAML (``experiments/studies/``) is rows of presets + overrides at a scale. This module
reads and expands them; :mod:`matryoshka2d.sweep.reproduce` runs them as ONE Ray Tune grid (a trial per row and training seed),
:mod:`.report` tabulates and checks them.

A row's config is composed in the one order of :data:`matryoshka2d.config.LAYERS` (:func:`row_overrides`): preset,
study base, scale, ``--data``, row ``set``, data dir, ``--set``. ``each_layer`` / ``each_pair`` expand a row into one row per layer / cell (separately trained models).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import presets  # studies ship in the package; expected/ is repository-only regression data
from ..config import compose_layers, deep_merge, load_config, load_yaml, parse_overrides
from ..errors import M2DError

EXPECTED_DIR = Path(__file__).resolve().parents[3] / "experiments" / "expected"
SCALES = ("smoke", "cpu", "gpu")
TINY = "tiny-bert"  # the smoke scale's model: a random 4 x 96 BERT written once under $M2D_HOME/models
ROW_KEYS = {"preset", "label", "set", "each_layer", "each_pair", "pairs_reference"}


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
    spec = load_yaml(path)
    where = f"study {path.name}"
    for key in ("name", "metric", "objective", "scales", "rows"):
        if key not in spec:
            raise M2DError(f"{where}: missing {key!r}")
    if scale not in spec["scales"]:
        raise M2DError(f"--scale: {scale!r} not in {where}; allowed: {', '.join(spec['scales'])}")
    if data and data not in (spec.get("datasets") or {}):
        have = ", ".join(spec.get("datasets") or {}) or "none"
        raise M2DError(f"--data: {data!r} is not a dataset option of {where}; allowed: {have}")
    for name, row in spec["rows"].items():
        unknown = set(row or {}) - ROW_KEYS
        if not isinstance(row, dict) or "preset" not in row or unknown:
            raise M2DError(f"{where}: row {name}: needs a preset; allowed keys {', '.join(sorted(ROW_KEYS))}"
                           + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    return Study(spec["name"], path, spec, scale, data, parse_overrides(sets))


def model_name(base: dict) -> str:
    """The model of a study's base config; ``tiny-bert`` is written on first use (seeded: the same weights)."""
    name = (base.get("model") or {}).get("name", "minilm-l6")
    if name != TINY:
        return name
    from ..config import m2d_home
    from ..testing import make_tiny_bert

    path = m2d_home() / "models" / "tiny-bert-4x96"
    if not (path / "config.json").is_file():
        make_tiny_bert(path.with_name(path.name + f".{os.getpid()}"), num_layers=4, hidden_size=96, num_heads=4,
                       intermediate_size=192, seed=0)
        os.replace(path.with_name(path.name + f".{os.getpid()}"), path) if not path.exists() else None
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
            for layer in parse_layers(spec["each_layer"], L, f"row {group}: each_layer"):
                over = _fill(spec.get("set") or {}, l=layer)
                rows.append(Row(f"{group}@{layer}", group, spec["preset"], over, title, [(layer, None)]))
        elif "each_pair" in spec:
            ref = spec.get("pairs_reference")
            for pair in spec["each_pair"]:
                method = MethodConfig(pairs=[tuple(pair)], pairs_reference=tuple(ref) if ref else None)
                layer, dim = method.resolve(L, H).pairs[0]
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


# -- the command -----------------------------------------------------------------------------------------------
