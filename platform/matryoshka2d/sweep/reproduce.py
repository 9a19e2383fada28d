"""``m2d reproduce`` (= ``experiments/reproduce.py``): a reproduction study run through the sweep driver, then tabulated
and checked.

    m2d reproduce --study sts --scale cpu            # train every row, write tables and claims
    m2d reproduce --check RUN_DIR                    # against experiments/expected/<study>.yaml
    m2d reproduce --write-expected RUN_DIR           # record its rows in that file (the entry's other rows stay)

:class:`StudyRun` is the sweep driver with the study's rows (x seeds) as a plain grid in place of a search space.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .. import storage
from ..errors import M2DError, OneLineParser
from ..study.spec import (SCALES, TINY, Row, check_study, expand_rows, idle_claims, load_study, row_config,
                          row_overrides)
from .driver import Sweep, _Formatter, add_baseline, check_baseline, check_counts

ACTIONS = ("check", "analyse", "write_expected")  # on a finished run dir, instead of a run


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
    p.add_argument("--dry-run", action="store_true",
                   help="every check the run makes before it starts (configs, data, metrics, claims), train nothing")
    p.add_argument("--check", default=None, metavar="RUN_DIR",
                   help="compare a finished run with its expected entry (--expected); exit 1 naming moved cells and "
                        "rows of the entry the run lacks")
    p.add_argument("--analyse", default=None, metavar="RUN_DIR", help="(re)write a finished run's tables and claims")
    p.add_argument("--write-expected", default=None, metavar="RUN_DIR",
                   help="record a finished, complete run in the expected entry of its scale: its rows replace theirs, "
                        "the entry's other rows stay")
    p.add_argument("--expected", default=None, metavar="FILE",
                   help="the expected results file of --check / --write-expected (default "
                        "experiments/expected/<study>.yaml of a source checkout)")
    p.add_argument("--replace-entry", action="store_true",
                   help="--write-expected: replace the scale's whole entry with this run (drops the rows it lacks)")
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
        if args.seeds < 1 or args.bootstrap < 100:
            raise M2DError(f"--seeds must be >= 1 and --bootstrap >= 100, got {args.seeds} and {args.bootstrap}")
        action = _action(args)
        if action:
            from ..study import report

            fn = {"check": report.check_run_dir, "analyse": report.analyse_run_dir,
                  "write_expected": report.write_expected}[action]
            return fn(Path(getattr(args, action)).expanduser().resolve(), args)
        if not args.study:
            raise M2DError("--study: required (sts, retrieval, all or a study YAML); --resume continues the latest "
                           "run of that study and scale, or give --resume RUN_DIR with it")
        names = ["sts", "retrieval"] if args.study == "all" else [args.study]
        if args.resume and len(names) > 1:
            raise M2DError("--resume: give the study (sts or retrieval), not all")
        studies = []
        for name in names:
            one = _replace_flag(argv, "--study", name)
            studies.append(StudyRun(parser, parser.parse_args(one), one, name))
        if len(studies) > 1 and not args.dry_run:  # --study all: the second study is checked before the first trains
            from .. import tracking

            for study in studies:
                study._preflight(tracking.resolve_tracking_uri(args.tracking_uri))
        code = 0
        for study in studies:  # one Tune experiment per study, one after the other
            code = max(code, study.run())
        return code
    except M2DError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2


def _action(args: argparse.Namespace) -> str | None:
    """The one run-dir action asked for (--check, --analyse, --write-expected), its flags checked."""
    given = [a for a in ACTIONS if getattr(args, a)]
    if len(given) > 1:
        raise M2DError(f"--{given[0].replace('_', '-')} and --{given[1].replace('_', '-')}: give one of --check, "
                       "--analyse, --write-expected")
    if args.replace_entry and given != ["write_expected"]:
        raise M2DError("--replace-entry: only with --write-expected RUN_DIR")
    if args.expected and given not in (["check"], ["write_expected"]):
        raise M2DError("--expected: only with --check or --write-expected RUN_DIR")
    return given[0] if given else None


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
        self.resolved: dict = {}  # label -> ResolvedRun of the selected rows, filled by _preflight
        self._preflown: tuple | None = None  # the (uri, args) _preflight last passed for
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
        if self.args.rows is not None:
            wanted = [x.strip() for x in self.args.rows.split(",") if x.strip()]
            if not wanted:
                raise M2DError(f"--rows: empty list; give rows such as {','.join(list(self.study.spec['rows'])[:2])}")
            known = {r.group for r in rows} | {r.label for r in rows}
            bad = [w for w in wanted if w not in known]
            if bad:
                raise M2DError(f"--rows: unknown {', '.join(bad)}; allowed: {', '.join(sorted(known))}")
            rows = [r for r in rows if r.group in wanted or r.label in wanted]
        return rows

    def _preflight(self, uri: str) -> list[Row]:
        """Every check of a study run that needs no tracking store, folder or Ray, before any of them is touched;
        ``--dry-run`` runs exactly these. Returns the selected rows (their resolved runs in ``self.resolved``)."""
        from ..cluster import local_resources, refuse_unschedulable, will_start_local
        from .trial import TrialSetup, choose_backend, trial_bundles

        a = self.args
        if self._preflown == (uri, a):  # --study all checked every study first
            return self._selected()
        check_counts(a)
        backend = choose_backend(a.workers_per_trial, a.backend)
        if will_start_local(a.address):
            one = TrialSetup("", {}, None, uri, workers=a.workers_per_trial, cpus_per_worker=a.cpus_per_worker,
                             gpus_per_trial=a.gpus_per_trial, backend=backend)
            refuse_unschedulable([local_resources()], trial_bundles(one), "this machine")
        storage.check_creatable(self.storage, "--storage-path")
        rows = self._selected()
        self.resolved = check_study(self.study, rows)
        check_baseline(a.baseline, uri, [r.label for r in rows])
        for note in idle_claims(self.study, rows, self.resolved):
            print(f"reproduce: note: {note}; it will be 'not run'")
        self._preflown = (uri, a)
        return rows

    def _check(self):
        from ..evaluate.grid import parse_objectives
        from .space import ROW, Param, SearchSpace
        from .trial import choose_backend

        a = self.args
        rows = self._selected()
        configs = {r.label: self.resolved[r.label].config for r in rows}  # checked by _preflight
        self.rows = {r.label: {"preset": r.preset, "overrides": row_overrides(self.study, r)} for r in rows}
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
        labels = [r.label for r in self._selected()]
        trials = report.collect(run_dir)
        missing = report.missing_trials(labels, self.args.seeds, trials)
        if missing:  # interrupted (Ctrl-C) or failed rows: no table from part of a study (--analyse refuses it too)
            print(f"reproduce: trials of {', '.join(missing)} did not finish; the tables need all "
                  f"{len(labels) * self.args.seeds}: continue with --resume {run_dir}", file=sys.stderr)
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
            for key in ("prompts", "default_prompt_name"):  # added later: unset, they leave recorded hashes valid
                if cfg["model"][key] is None:
                    del cfg["model"][key]
            hashes[row.label] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        return {"study": self.study.name, "study_file": str(self.study.path), "scale": self.study.scale,
                "data": self.study.data, "sets": self.args.sets, "seeds": self.args.seeds, "rows": list(hashes),
                "config_hash": hashes}

    def _dry_run(self) -> int:
        from .. import tracking

        rows = self._preflight(tracking.resolve_tracking_uri(self.args.tracking_uri))
        print(f"reproduce: {self.study.name} at scale {self.study.scale}: {len(rows)} rows x {self.args.seeds} seed(s)")
        for row in rows:
            cfg = self.resolved[row.label].config
            m = cfg.method
            print(f"  {row.label:<18} {m.name:<14} steps {cfg.train.max_steps} batch {cfg.train.batch_size} "
                  f"lr {cfg.train.lr:g} task {m.task_loss} model {Path(cfg.model.name).name}")
        print("reproduce: dry run: every check of the run passed (configs, data, metrics, claims); nothing was "
              "trained")
        return 0
