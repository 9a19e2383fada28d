"""``m2d reproduce`` (= ``experiments/reproduce.py``): a reproduction study run through the sweep driver, then tabulated
and checked.

    m2d reproduce --study sts --scale cpu            # train every row, write tables and claims
    m2d reproduce --check RUN_DIR                    # against experiments/expected/<study>.yaml

:class:`StudyRun` is the sweep driver with the study's rows (x seeds) as a plain grid in place of a search space.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

from .. import storage
from ..errors import M2DError, OneLineParser
from ..study.spec import SCALES, TINY, Row, expand_rows, load_study, row_config, row_overrides
from .driver import Sweep, _Formatter, add_baseline


def build_parser(description: str, prog: str = "reproduce.py") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=description or __doc__, formatter_class=_Formatter)
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
    p.set_defaults(smoke=False, num_samples=1, scheduler="fifo", seed=0, objective=None, preset="full", space="")
    return p


def main(argv: Sequence[str] | None = None, description: str = "", prog: str = "reproduce.py") -> int:
    """``m2d reproduce`` / ``experiments/reproduce.py``; returns the exit code (2: bad input, 1: failed rows or a
    failed check)."""
    parser = build_parser(description, prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        from ..study import report

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
        self.study = self._load(name)
        self.experiment = args.experiment_name or f"m2d-reproduce-{self.study.name}-{args.scale}"

    def _resume_state(self):
        resumed = super()._resume_state()  # a resumed run's saved arguments replace this call's
        self.study = self._load(self.args.study)
        return resumed

    def _load(self, name: str):
        from .driver import explicit_data_dir

        study = load_study(name, self.args.scale, self.args.data, self.args.sets)
        study.data_dir = explicit_data_dir(self.args.data_dir)
        return study

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
        from ..resolve import check_run
        from .driver import check_counts, parse_objectives
        from .space import ROW, Param, SearchSpace
        from .trial import choose_backend

        a = self.args
        rows = self._selected()
        check_counts(a)
        configs = {}
        for row in rows:
            try:
                configs[row.label] = check_run(row_config(self.study, row)).config
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
        from ..train.mining import premine

        seeds = []
        for cfg in configs.values():
            for offset in range(self.args.seeds):
                one = cfg.model_copy(deep=True)
                one.train.seed = cfg.train.seed + offset
                seeds.append(one)
        premine(seeds, "reproduce")

    def _new_tuner(self, setup, objectives, num_samples, concurrency, run_name, cfg):
        from .tuner import grid_tuner

        return grid_tuner(setup, concurrency, str(self.storage), run_name)

    def _after(self, mlf, parent: str, run_dir: Path, code: int) -> int:
        from ..study import report

        (run_dir / storage.STUDY).write_text(json.dumps(self.describe(), indent=2))
        expected = len(self._selected()) * self.args.seeds
        trials = report.collect(run_dir)
        finished = sum(len(v) for v in trials.values())
        if finished < expected:  # interrupted (Ctrl-C) or failed rows: no table from part of a study
            print(f"reproduce: {finished} of {expected} trials finished; the tables need all of them: continue "
                  f"with --resume {run_dir}", file=sys.stderr)
            return 1
        out = report.analyse(run_dir, self.study, self._selected(), self.args.bootstrap, trials)
        from .. import tracking

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
        from ..resolve import resolve

        rows = self._selected()
        print(f"reproduce: {self.study.name} at scale {self.study.scale}: {len(rows)} rows x {self.args.seeds} seed(s)")
        for row in rows:
            try:
                cfg = row_config(self.study, row)
                resolve(cfg)
            except M2DError as err:
                raise M2DError(f"row {row.label}: {err}") from None
            m = cfg.method
            print(f"  {row.label:<18} {m.name:<14} steps {cfg.train.max_steps} batch {cfg.train.batch_size} "
                  f"lr {cfg.train.lr:g} task {m.task_loss} model {Path(cfg.model.name).name}")
        print("reproduce: dry run: every row's config resolves and fits the model; nothing was trained")
        return 0
