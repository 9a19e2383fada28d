"""``m2d sweep --space NAME`` (and ``experiments/sweep_*.py``): parse, check everything cheap, then run one Tune sweep.

Order matters for the user: config, search space, data, model and tracking store are checked BEFORE Ray
starts, so a typo or a dead MLflow server is one ``sweep: error: ...`` line within seconds, never a
traceback after the cluster came up. The sweep's parent run id and its original arguments are stored in
``<run dir>/m2d_sweep.json``, so ``--resume`` needs no other flag to continue exactly that sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence

from .. import presets, storage, tracking
from ..cluster import local_resources, refuse_unschedulable, start_or_join, wait_for_resources, will_start_local
from ..config import compose, compose_layers, load_overlay, m2d_home
from ..errors import M2DError, OneLineParser
from ..evaluate.grid import DEFAULT_OBJECTIVE, parse_objectives

STATE_FILE = storage.SWEEP_STATE
SMOKE_SAMPLES = 2
TRIAL_ID = re.compile(r"\w+_\d{5}")  # Tune's <name>_<5-digit index>
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
STATE_KEYS = {"parent_run_id": str, "experiment": str, "tracking_uri": str, "argv": list}  # what --resume reads


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, and the script docstring's command examples kept as written."""


def build_parser(prog: str, description: str, preset: str, space: str | None) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=description, formatter_class=_Formatter)
    p.add_argument("--space", default=space, required=space is None,
                   help=f"search space: a name ({', '.join(presets.names('spaces'))}) or a YAML path; the MLflow "
                        "experiment is m2d-<name>")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS when set, e.g. under `ray job submit`, "
                        "else a local Ray started here)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny run: {SMOKE_SAMPLES} trials and the overlay presets/configs/overlays/smoke.yaml "
                        "(bundled minilm-l6, 10 steps, 200 STS-B dev pairs)")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default 16, or 2 with --smoke)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers (DDP ranks) per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial, split over its workers")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--backend", default="auto", choices=("auto", "inprocess", "torch"),
                   help="auto: the loop runs in the trial itself with 1 worker, on a TorchTrainer otherwise")
    p.add_argument("--data-dir", default=None, help="data root (default $M2D_DATA_DIR)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///$M2D_HOME/mlflow.db, "
                        "M2D_HOME=~/.matryoshka2d)")
    p.add_argument("--storage-path", default=None,
                   help="Ray results: trial checkpoints and sweep state (default $M2D_HOME/ray_results)")
    p.add_argument("--experiment-name", default=None,
                   help="MLflow experiment and run-dir prefix (default m2d-<space>, m2d-<space>-smoke with --smoke)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue a killed sweep: the latest one of this experiment, or RUN_DIR")
    p.add_argument("--preset", default=preset, help="base method preset (experiments/configs) or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="base config override, e.g. train.max_steps=500 (repeatable)")
    p.add_argument("--objective", action="append", default=None, metavar="METRIC[:max|min]",
                   help=f"optimised metric (default {DEFAULT_OBJECTIVE}); twice for a multi-objective study, "
                        "e.g. also stsb/spearman/worst_cell:max")
    p.add_argument("--scheduler", default="asha", choices=("asha", "fifo"),
                   help="ASHA early stopping on the intermediate grid (single objective only)")
    p.add_argument("--seed", type=int, default=0, help="Optuna sampler seed (train.seed comes from the config)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="parallel trials (default: cluster CPUs/GPUs over one trial's need)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial / worker group")
    p.add_argument("--schedule-timeout", type=float, default=600,
                   help="on a cluster given by --address: seconds to wait for one trial's resources to appear "
                        "(autoscaling) before failing; a local cluster refuses a trial that cannot fit at once")
    add_baseline(p)
    return p


def add_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default=None, metavar="TRIAL",
                   help="the trial the parent run's difference heatmaps subtract: a trial id, run id or study row "
                        "(default: the first trial of the base preset's method)")


def main(argv: Sequence[str] | None = None, *, sweep: str | None = None, description: str = "",
         preset: str = "v2", prog: str | None = None) -> int:
    """``m2d sweep`` (``sweep`` None: ``--space`` required) or ``experiments/sweep_<sweep>.py`` (its space by default);
    returns the exit code (2: bad input, 1: failed trials)."""
    parser = build_parser(prog or (f"sweep_{sweep}.py" if sweep else "m2d sweep"),
                          description or "Run one Ray Tune sweep over config fields; every trial an MLflow run.",
                          preset, sweep)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return Sweep(parser, args, argv).run()
    except M2DError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2


def explicit_data_dir(flag: str | None) -> str | None:
    """``--data-dir`` or ``$M2D_DATA_DIR``, absolute: trial workers may start elsewhere (a job copy, other nodes)."""
    data_dir = flag or os.environ.get("M2D_DATA_DIR")
    return str(Path(data_dir).expanduser().resolve()) if data_dir else None


def check_baseline(baseline: str | None, uri: str, rows: Sequence[str] = ()) -> None:
    """``--baseline`` before any work (the comparison that uses it comes after the last trial): a row of the study,
    a Tune trial id, or the id of a run that exists in the tracking store."""
    if baseline is None or baseline in rows or TRIAL_ID.fullmatch(baseline):
        return
    if RUN_ID.fullmatch(baseline):
        if not run_exists(uri, baseline):
            raise M2DError(f"--baseline: no run {baseline} in the tracking store {uri}")
        return
    allowed = ["a trial id such as 1a2b3c4d_00000", "the 32-hex id of an MLflow run"]
    allowed += [f"a row of this run ({', '.join(rows)})"] if rows else []
    raise M2DError(f"--baseline: {baseline!r} is none of: {'; '.join(allowed)}")


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the tracking store holds the run; a SQLite store that is not there is not created to find out."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    tracking.check_tracking(uri)
    from mlflow.exceptions import MlflowException

    try:
        tracking.client(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def check_counts(args: argparse.Namespace) -> None:
    """The driver's own numbers (a study shares them)."""
    for flag, value, low in (("--num-samples", args.num_samples, 1), ("--workers-per-trial", args.workers_per_trial, 1),
                             ("--max-concurrent", args.max_concurrent, 1), ("--max-failures", args.max_failures, -1)):
        if value is not None and value < low:
            raise M2DError(f"{flag}: must be >= {low}, got {value}")
    if not (0 <= args.gpus_per_trial < math.inf and 0 < args.cpus_per_worker < math.inf):  # NaN fails both
        raise M2DError(f"--gpus-per-trial must be >= 0 and --cpus-per-worker > 0, got {args.gpus_per_trial:g} and "
                       f"{args.cpus_per_worker:g}")
    if not 0 < args.schedule_timeout < math.inf:
        raise M2DError(f"--schedule-timeout: must be a positive number of seconds, got {args.schedule_timeout:g}")


class Sweep:
    """One sweep invocation (fresh or ``--resume``): checks, Ray, the parent run, the Tuner, reconciliation.

    A reproduction study (:class:`matryoshka2d.sweep.reproduce.StudyRun`) overrides :meth:`_check` (its rows instead of a space),
    :meth:`_new_tuner` (a plain grid) and :meth:`_after` (its tables).
    """

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str],
                 name: str | None = None):
        self.parser, self.args, self.argv = parser, args, argv
        self.name = name or Path(str(args.space)).stem  # the space's name: weighting, target_dims, ...
        self.experiment = args.experiment_name or f"m2d-{self.name.replace('_', '-')}" + ("-smoke" if args.smoke else "")
        self.storage = Path(args.storage_path or m2d_home() / "ray_results").expanduser().resolve()
        self.rows: dict[str, dict] = {}  # a study's rows (label -> preset + overrides); empty for a sweep

    # -- checks (no Ray yet) -----------------------------------------------------------------------------
    def _preflight(self, uri: str) -> None:
        """What needs no tracking store or folder, before either is touched (a study checks its rows here)."""
        check_baseline(self.args.baseline, uri)

    def _resume_state(self) -> tuple[Path, dict] | None:
        """On --resume: the run dir and its saved state; the saved arguments replace this call's."""
        if not self.args.resume:
            return None
        self.args, run_dir, state = saved_sweep(self.parser, self.args, self.storage, self.experiment)
        return run_dir, state

    def _base(self) -> dict:
        """The layers every trial shares (config.LAYERS): the sweep overlay (and the smoke one), the data dir, ``--set``."""
        a = self.args
        overlays = [load_overlay("sweep")] + ([load_overlay("smoke")] if a.smoke else [])
        return compose_layers(overlays=overlays, data_dir=explicit_data_dir(a.data_dir), sets=a.sets)

    def _check(self):
        from ..resolve import check_run
        from ..train.mining import premine
        from .space import load_space
        from .trial import choose_backend

        a = self.args
        check_counts(a)
        objectives = parse_objectives(a.objective)
        base = self._base()
        cfg = compose(a.preset, composed=base)
        for name, _ in objectives:
            if name.split("/")[0] not in cfg.eval.datasets:
                raise M2DError(f"--objective: {name} needs {name.split('/')[0]} in eval.datasets "
                               f"(now {', '.join(cfg.eval.datasets)})")
        check_run(cfg)
        space = load_space(presets.find("spaces", a.space),
                           validate=lambda point: check_run(compose(a.preset, composed=base, point=point)))
        backend = choose_backend(a.workers_per_trial, a.backend)
        premine([cfg], "sweep")
        return objectives, base, cfg, space, backend

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> int:
        from .trial import TrialSetup, trial_bundles

        resumed = self._resume_state()
        a = self.args
        uri = tracking.resolve_tracking_uri(a.tracking_uri)
        self._preflight(uri)
        tracking.check_tracking(uri)  # a dead server is reported within seconds
        storage.check_creatable(self.storage, "--storage-path")
        objectives, base, cfg, space, backend = self._check()
        setup = TrialSetup(preset=str(a.preset), base=base, space=space, tracking_uri=uri, workers=a.workers_per_trial,
                           cpus_per_worker=a.cpus_per_worker, gpus_per_trial=a.gpus_per_trial, backend=backend,
                           max_failures=a.max_failures, rows=self.rows)
        local = will_start_local(a.address)
        if local:  # a cluster of this machine's size: a trial that cannot fit is refused before Ray starts
            refuse_unschedulable([local_resources()], trial_bundles(setup), "this machine")
        start_or_join(a.address)
        try:
            if not local:
                wait_for_resources(trial_bundles(setup), a.schedule_timeout)
            return self._tune(uri, setup, resumed, objectives, cfg)
        finally:
            import ray

            ray.shutdown()  # stops the local cluster, or leaves the joined one

    def _open_runs(self, mlf, uri: str, resumed, objectives, cfg, setup, num_samples: int):
        """The sweep's parent run (new, or the resumed one set RUNNING again) and its run dir."""
        from . import runs

        a = self.args
        experiment_id = tracking.ensure_experiment(mlf, self.experiment if not resumed else resumed[1]["experiment"],
                                                   uri)
        tags = runs.tags(cfg, a.preset, a.seed)
        if resumed:
            run_dir, state = resumed
            parent = state["parent_run_id"]
            stale = runs.reopen_parent(mlf, experiment_id, parent)
            print(f"sweep: resuming {run_dir} (MLflow parent run {parent}; {stale} stale trial runs closed)")
        else:
            run_dir = self.storage / f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
            params = {"script": self.name, "preset": a.preset, "space": Path(a.space).name, "num_samples": num_samples,
                      "objectives": json.dumps(objectives), "sampler_seed": a.seed, "scheduler": a.scheduler,
                      "workers_per_trial": a.workers_per_trial, "backend": setup.backend,
                      "gpus_per_trial": a.gpus_per_trial, "smoke": a.smoke}
            parent = runs.start_parent(mlf, experiment_id, run_dir.name, params, setup.base, tags)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_state(run_dir / STATE_FILE, {
                "parent_run_id": parent, "experiment": self.experiment, "experiment_id": experiment_id,
                "tracking_uri": uri, "argv": [x for x in self.argv if not x.startswith("--resume")]})
            print(f"sweep: {run_dir.name}: {num_samples} trials, MLflow {uri} experiment {self.experiment} "
                  f"parent run {parent}")
        setup.experiment_id, setup.parent_run_id, setup.run_dir, setup.tags = experiment_id, parent, str(run_dir), tags
        return parent, run_dir

    def _tune(self, uri: str, setup, resumed, objectives, cfg) -> int:
        import ray
        from ray import tune

        from ..cluster import max_concurrent
        from . import runs
        from .tuner import restore_tuner, tune_environment

        a = self.args
        num_samples = a.num_samples or (SMOKE_SAMPLES if a.smoke else 16)
        if resumed and not tune.Tuner.can_restore(str(resumed[0])):
            raise M2DError(f"--resume: {resumed[0]} has no Tune state yet (killed before its first save); "
                           "start a new sweep")
        mlf = tracking.client(uri)
        parent, status, code = None, "FAILED", 1
        try:  # from the parent's creation on, every way out closes it (and any trial run left RUNNING)
            parent, run_dir = self._open_runs(mlf, uri, resumed, objectives, cfg, setup, num_samples)
            concurrency = a.max_concurrent or max_concurrent(ray.cluster_resources(), a.workers_per_trial,
                                                             a.cpus_per_worker, a.gpus_per_trial)
            tune_environment()
            if resumed:
                tuner = restore_tuner(str(run_dir), setup)
            else:
                tuner = self._new_tuner(setup, objectives, num_samples, concurrency, run_dir.name, cfg)
            print(f"sweep: backend {setup.backend}, {a.workers_per_trial} worker(s) per trial, "
                  f"{concurrency} trial(s) at a time")
            fit_started = time.perf_counter()
            results = tuner.fit()
            # the server may be down right now (a restart): wait for it, bounded, rather than lose the summary
            tracking.retry(tracking.log_metrics, mlf, parent, {tracking.Key.FIT_S: time.perf_counter() - fit_started}, 0,
                           what="sweep summary")
            code = tracking.retry(runs.reconcile, mlf, setup.experiment_id, parent, results, objectives,
                                  what="reconciling the MLflow runs")
            code = self._after(mlf, parent, run_dir, code)
            runs.summarise(mlf, parent, run_dir, a.baseline, cfg.method.name)
            status = "FINISHED" if code == 0 else "FAILED"
            return code
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if parent is not None:
                runs.close(mlf, setup.experiment_id, parent, status)

    def _new_tuner(self, setup, objectives, num_samples: int, concurrency: int, run_name: str, cfg):
        from .tuner import search_tuner

        a = self.args
        return search_tuner(setup, objectives, num_samples, a.seed, a.scheduler, concurrency, str(self.storage),
                            run_name, cfg.train.max_steps, cfg.eval.every_steps)

    def _after(self, mlf, parent: str, run_dir: Path, code: int) -> int:
        """After the trials (a study writes its tables here); returns the exit code."""
        return code


def saved_sweep(parser: argparse.ArgumentParser, args: argparse.Namespace, root: Path, experiment: str
                ) -> tuple[argparse.Namespace, Path, dict]:
    """``--resume [RUN_DIR]``: the saved arguments (with this call's address and tracking URI), run dir and state."""
    if args.resume == "latest":
        found = sorted((p for p in root.glob(f"{experiment}-*") if (p / STATE_FILE).is_file()),
                       key=lambda p: (p / STATE_FILE).stat().st_mtime)
        if not found:
            raise M2DError(f"--resume: no sweep of {experiment} under {root}")
        run_dir = found[-1]
    else:
        run_dir = Path(args.resume).expanduser().resolve()
        if not (run_dir / STATE_FILE).is_file():
            raise M2DError(f"--resume: {run_dir} is not a sweep run dir (no {STATE_FILE})")
    state = read_state(run_dir / STATE_FILE)
    saved = parser.parse_args(state["argv"])
    for keep in ("address", "tracking_uri"):  # this call's environment
        if getattr(args, keep) is not None:
            setattr(saved, keep, getattr(args, keep))
    saved.tracking_uri = saved.tracking_uri or state["tracking_uri"]
    saved.resume = str(run_dir)
    return saved, run_dir, state


def read_state(path: Path) -> dict:
    """A sweep's ``m2d_sweep.json``, with every key that resuming reads (:data:`STATE_KEYS`) of its type."""
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError(f"expected a mapping, got {type(state).__name__}")
        bad = [k for k, kind in STATE_KEYS.items() if not isinstance(state.get(k), kind)]
        if bad:
            raise ValueError(f"missing or malformed {', '.join(bad)}")
        if not all(isinstance(x, str) for x in state["argv"]):
            raise ValueError("argv: expected a list of arguments")
    except (OSError, ValueError) as err:
        raise M2DError(f"--resume: {path} is unreadable ({err}); start a new sweep (the MLflow runs stay)") from None
    return state


def write_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)  # atomic: a killed driver never leaves half a state file
