"""Reproduction studies: a study YAML (``experiments/studies/``) is rows of presets + overrides at a scale, run as
ONE Ray Tune grid (a trial per row and training seed) through the sweep driver, then tabulated and checked.

    python experiments/reproduce.py --study sts --scale cpu            # train every row, write tables and claims
    python experiments/reproduce.py --check RUN_DIR                    # against experiments/expected/<study>.yaml

A row's config is resolved in one place, :func:`row_overrides`: preset <- study base <- scale <- row ``set`` <-
``--set``. ``each_layer`` / ``each_pair`` expand a row into one row per layer / cell (separately trained models).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import deep_merge, load_config, load_yaml, parse_overrides
from .errors import M2DError, OneLineParser
from .sweep import Sweep

STUDY_DIR = Path(__file__).resolve().parents[2] / "experiments" / "studies"
EXPECTED_DIR = Path(__file__).resolve().parents[2] / "experiments" / "expected"
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

    def base(self) -> dict:
        """Study base <- scale <- --data <- --set: what every row shares."""
        base = deep_merge(self.spec.get("base") or {}, self.spec["scales"][self.scale] or {})
        if self.data:
            over = {k: v for k, v in self.spec["datasets"][self.data].items() if k in ("model", "data", "method",
                                                                                       "train", "eval")}
            base = deep_merge(base, over)
        return deep_merge(base, self.sets)


def study_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = STUDY_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))
    raise M2DError(f"--study: {name_or_path} is neither a study file nor one of: {', '.join(names)}, all")


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
    from .testing import make_tiny_bert
    from .tracking import m2d_home

    path = m2d_home() / "models" / "tiny-bert-4x96"
    if not (path / "config.json").is_file():
        make_tiny_bert(path.with_name(path.name + f".{os.getpid()}"), num_layers=4, hidden_size=96, num_heads=4,
                       intermediate_size=192, seed=0)
        os.replace(path.with_name(path.name + f".{os.getpid()}"), path) if not path.exists() else None
    return str(path)


def expand_rows(study: Study) -> list[Row]:
    """The study's rows for its model: ``each_layer`` and ``each_pair`` become one row per layer / cell."""
    from .methods import MethodConfig, resolve_layers
    from .preflight import model_shape

    base = study.base()
    shape = model_shape(model_name(base))
    L, H = shape.num_layers, shape.hidden_size
    rows: list[Row] = []
    for group, spec in study.spec["rows"].items():
        title = spec.get("label", group)
        if "each_layer" in spec:
            for layer in resolve_layers(spec["each_layer"], L, f"row {group}: each_layer"):
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
    """THE resolution of a row: study base <- scale <- --data <- row overrides <- --set (the preset is under all)."""
    base = study.base()
    base = deep_merge(base, {"model": {"name": model_name(base)}})
    return deep_merge(deep_merge(base, row.overrides), study.sets)


def row_config(study: Study, row: Row):
    return load_config(row.preset, row_overrides(study, row))


# -- the command -----------------------------------------------------------------------------------------------
def build_parser(description: str) -> argparse.ArgumentParser:
    from .sweep import _Formatter, add_baseline

    p = OneLineParser(prog="reproduce.py", description=description, formatter_class=_Formatter)
    p.add_argument("--study", default=None, help="sts, retrieval, all, or a study YAML path")
    p.add_argument("--scale", default="cpu", choices=SCALES,
                   help="smoke: tiny random BERT, minutes; cpu: bundled MiniLM on 2 cores; gpu: the seed's setup")
    p.add_argument("--data", default=None, help="a dataset option of the study (retrieval: msmarco)")
    p.add_argument("--seeds", type=int, default=1, help="train every row with N seeds (train.seed, +1, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a config field for every row, e.g. train.max_steps=300")
    p.add_argument("--rows", default=None, help="only these rows (comma-separated groups or labels)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples for the claims")
    p.add_argument("--dry-run", action="store_true", help="resolve and check every row's config, train nothing")
    p.add_argument("--check", default=None, metavar="RUN_DIR",
                   help="compare a finished run with experiments/expected/<study>.yaml; exit 1 naming moved cells")
    p.add_argument("--analyse", default=None, metavar="RUN_DIR", help="(re)write a finished run's tables and claims")
    p.add_argument("--write-expected", default=None, metavar="RUN_DIR",
                   help="record a finished run as the expected entry of its scale")
    p.add_argument("--address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers-per-trial", type=int, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--backend", default="auto", choices=("auto", "inprocess", "torch"))
    p.add_argument("--data-dir", default=None, help="data root (default $M2D_DATA_DIR)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite)")
    p.add_argument("--storage-path", default=None, help="Ray results (default $M2D_HOME/ray_results)")
    p.add_argument("--experiment-name", default=None, help="default m2d-reproduce-<study>-<scale>")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue a killed study: the latest of this study and scale, or RUN_DIR")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--schedule-timeout", type=float, default=600)
    add_baseline(p)
    # the sweep driver's fields a study does not vary
    p.set_defaults(smoke=False, num_samples=1, scheduler="fifo", seed=0, objective=None, preset="full",
                   space="", fault_at_step=0)
    return p


def main(argv: Sequence[str] | None = None, description: str = "") -> int:
    parser = build_parser(description)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        from . import report

        for flag, fn in (("check", report.check_run_dir), ("analyse", report.analyse_run_dir),
                         ("write_expected", report.write_expected)):
            if getattr(args, flag):
                return fn(Path(getattr(args, flag)).expanduser().resolve(), args)
        if args.seeds < 1 or args.bootstrap < 100:
            raise M2DError(f"--seeds must be >= 1 and --bootstrap >= 100, got {args.seeds} and {args.bootstrap}")
        if not args.study:
            raise M2DError("--study: required (sts, retrieval, all or a study YAML); --resume continues the latest "
                           "run of that study and scale, or give --resume RUN_DIR with it")
        names = ["sts", "retrieval"] if args.study == "all" else [args.study]
        if args.resume and len(names) > 1:
            raise M2DError("--resume: give the study (sts or retrieval), not all")
        code = 0
        for name in names:  # --study all: one Tune experiment per study, one after the other
            one = _replace_flag(argv, "--study", name)
            code = max(code, StudyRun(parser, parser.parse_args(one), one, name).run())
        return code
    except M2DError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item == flag:
            out += [flag, value]
            skip = True
        elif item.startswith(flag + "="):
            out.append(f"{flag}={value}")
        else:
            out.append(item)
    return out


class StudyRun(Sweep):
    """The sweep driver with a study's grid of rows in place of a search space."""

    def __init__(self, parser, args, argv, name: str):
        super().__init__(parser, args, argv, "reproduce")
        self.study = load_study(name, args.scale, args.data, args.sets)
        self.experiment = args.experiment_name or f"m2d-reproduce-{self.study.name}-{args.scale}"

    def _resume_state(self):
        resumed = super()._resume_state()  # a resumed run's saved arguments replace this call's
        self.study = load_study(self.args.study, self.args.scale, self.args.data, self.args.sets)
        return resumed

    def run(self) -> int:
        return self._dry_run() if self.args.dry_run else super().run()

    def _selected(self) -> list[Row]:
        rows = expand_rows(self.study)
        if self.args.rows:
            wanted = [x.strip() for x in self.args.rows.split(",") if x.strip()]
            known = {r.group for r in rows} | {r.label for r in rows}
            bad = [w for w in wanted if w not in known]
            if bad:
                raise M2DError(f"--rows: unknown {', '.join(bad)}; allowed: {', '.join(sorted(known))}")
            rows = [r for r in rows if r.group in wanted or r.label in wanted]
        return rows

    def _check(self):
        from .distributed import ROW, Param, SearchSpace, choose_backend
        from .preflight import check_run
        from .sweep import parse_objectives

        a = self.args
        rows = self._selected()
        for flag, value, low in (("--workers-per-trial", a.workers_per_trial, 1),
                                 ("--max-concurrent", a.max_concurrent, 1), ("--max-failures", a.max_failures, -1)):
            if value is not None and value < low:
                raise M2DError(f"{flag}: must be >= {low}, got {value}")
        data_dir = a.data_dir or os.environ.get("M2D_DATA_DIR")
        if data_dir:
            self.study.sets = deep_merge(self.study.sets, {"data": {"data_dir": str(Path(data_dir).resolve())}})
        configs = {}
        for row in rows:
            try:
                configs[row.label] = check_run(row_config(self.study, row))
            except M2DError as err:
                raise M2DError(f"row {row.label}: {err}") from None
        self.rows = {r.label: {"preset": r.preset, "overrides": row_overrides(self.study, r)} for r in rows}
        if a.baseline and not re.fullmatch(r"[0-9a-f]{32}|\w+_\d{5}", a.baseline) and a.baseline not in self.rows:
            raise M2DError(f"--baseline: {a.baseline!r} is no row of this run; allowed: {', '.join(self.rows)}")
        first = configs[rows[0].label]
        params = [Param(ROW, "grid", labels=[r.label for r in rows])]
        if a.seeds > 1:
            params.append(Param("train.seed", "grid", labels=[first.train.seed + i for i in range(a.seeds)]))
        space = SearchSpace(str(self.study.path), params)
        self._prepare(configs)
        return parse_objectives([self.study.objective]), {}, first, space, choose_backend(a.workers_per_trial,
                                                                                          a.backend)

    def _prepare(self, configs: dict) -> None:
        """Once, before any trial: the hard negatives every retrieval row (and seed) trains on."""
        from .mining import premine

        seeds = []
        for cfg in configs.values():
            for offset in range(self.args.seeds):
                one = cfg.model_copy(deep=True)
                one.train.seed = cfg.train.seed + offset
                seeds.append(one)
        premine(seeds, "reproduce")

    def _new_tuner(self, setup, objectives, num_samples, concurrency, run_name, cfg):
        from ray import tune

        from .distributed import RunCloser, _trainable

        return tune.Tuner(
            _trainable(setup), param_space=setup.space.tune_space(),
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name=run_name, storage_path=str(self.storage),
                failure_config=tune.FailureConfig(max_failures=setup.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[RunCloser(setup.tracking_uri, setup.experiment_id, setup.parent_run_id, setup.run_dir)]))

    def _after(self, mlf, parent: str, run_dir: Path, code: int) -> int:
        from . import report

        (run_dir / "study.json").write_text(json.dumps(self.describe(), indent=2))
        expected = len(self._selected()) * self.args.seeds
        trials = report.collect(run_dir)
        finished = sum(len(v) for v in trials.values())
        if finished < expected:  # interrupted (Ctrl-C) or failed rows: no table from part of a study
            print(f"reproduce: {finished} of {expected} trials finished; the tables need all of them: continue "
                  f"with --resume {run_dir}", file=sys.stderr)
            return 1
        out = report.analyse(run_dir, self.study, self._selected(), self.args.bootstrap, trials)
        from . import tracking

        for path in out:
            tracking.retry(mlf.log_artifact, parent, str(path), artifact_path="reproduction", what="study outputs")
        print(f"reproduce: tables, report.md and claims.md in {run_dir / 'tables'}")
        return code

    def describe(self) -> dict:
        """What the run was: study file, scale, dataset option, --set, and each row's resolved config hash."""
        import hashlib

        hashes = {}
        for row in self._selected():
            cfg = row_config(self.study, row).model_dump(mode="json")
            cfg["data"].pop("data_dir", None)  # where the data (or the tiny model, under $M2D_HOME) lies is not
            if self.study.base().get("model", {}).get("name") == TINY:  # what the run is
                cfg["model"]["name"] = TINY
            hashes[row.label] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        return {"study": self.study.name, "study_file": str(self.study.path), "scale": self.study.scale,
                "data": self.study.data, "sets": self.args.sets, "seeds": self.args.seeds, "config_hash": hashes}

    def _dry_run(self) -> int:
        from .preflight import check_for_model

        rows = self._selected()
        print(f"reproduce: {self.study.name} at scale {self.study.scale}: {len(rows)} rows x {self.args.seeds} seed(s)")
        for row in rows:
            try:
                cfg = row_config(self.study, row)
                check_for_model(cfg)
            except M2DError as err:
                raise M2DError(f"row {row.label}: {err}") from None
            m = cfg.method
            print(f"  {row.label:<18} {m.name:<14} steps {cfg.train.max_steps} batch {cfg.train.batch_size} "
                  f"lr {cfg.train.lr:g} task {m.task_loss} model {Path(cfg.model.name).name}")
        print("reproduce: dry run: every row's config resolves and fits the model; nothing was trained")
        return 0
