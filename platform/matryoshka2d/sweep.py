"""The shared command line of ``experiments/sweep_*.py``: parse, check everything cheap, then run one Tune sweep.

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
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import tracking
from .cluster import will_start_local
from .config import deep_merge, load_config, parse_overrides
from .errors import M2DError, OneLineParser

STATE_FILE = "m2d_sweep.json"
DEFAULT_OBJECTIVE = "stsb/spearman/grid_mean:max"
# A sweep trial by default: long enough to separate methods, with intermediate grids for ASHA.
SWEEP_DEFAULTS: dict[str, Any] = {"train": {"max_steps": 1000, "checkpoint_every": 200},
                                  "eval": {"every_steps": 200}}
# --smoke: minutes on 2 CPU cores with the bundled all-MiniLM-L6-v2.
SMOKE: dict[str, Any] = {
    "model": {"name": "minilm-l6", "max_length": 32},
    "data": {"max_train_examples": 400},
    "train": {"max_steps": 10, "batch_size": 8, "log_every": 5, "checkpoint_every": 5},
    "eval": {"max_examples": 200, "dims": [32, 128, 384], "every_steps": 5, "batch_size": 64},
}
SMOKE_SAMPLES = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, and the script docstring's command examples kept as written."""


def build_parser(prog: str, description: str, preset: str, experiment: str, space: Path) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=description, formatter_class=_Formatter)
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS when set, e.g. under `ray job submit`, "
                        "else a local Ray started here)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny run: {SMOKE_SAMPLES} trials, 10 steps, bundled minilm-l6, 200 STS-B dev pairs")
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
                   help=f"MLflow experiment and run-dir prefix (default {experiment}, {experiment}-smoke with --smoke)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue a killed sweep: the latest one of this experiment, or RUN_DIR")
    p.add_argument("--preset", default=preset, help="base method preset (experiments/configs) or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="base config override, e.g. train.max_steps=500 (repeatable)")
    p.add_argument("--space", default=str(space), help="search space YAML")
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
    p.add_argument("--fault-at-step", type=int, default=0, help=argparse.SUPPRESS)  # test hook
    return p


def add_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default=None, metavar="TRIAL",
                   help="the trial the parent run's difference heatmaps subtract: a trial id, run id or study row "
                        "(default: the first trial of the base preset's method)")


def main(argv: Sequence[str] | None = None, *, sweep: str, description: str, preset: str = "v2",
         space: Path | None = None) -> int:
    """Entry point of ``experiments/sweep_<sweep>.py``; returns the exit code (2: bad input, 1: failed trials)."""
    prog = f"sweep_{sweep}.py"
    space = space or Path(__file__).resolve().parents[2] / "experiments" / "spaces" / f"{sweep}.yaml"
    parser = build_parser(prog, description, preset, f"m2d-{sweep.replace('_', '-')}", space)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return Sweep(parser, args, argv, sweep).run()
    except M2DError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2


def parse_objectives(items: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in items or [DEFAULT_OBJECTIVE]:
        name, _, mode = item.partition(":")
        mode = mode or "max"
        parts = name.split("/")
        if mode not in ("max", "min") or len(parts) != 3 or parts[2] not in tracking.SUMMARIES:
            raise M2DError(f"--objective: {item!r}; expected <dataset>/<metric>/<summary>[:max|min] with summary one "
                           f"of {', '.join(tracking.SUMMARIES)}, e.g. {DEFAULT_OBJECTIVE}")
        out.append((name, mode))
    if len({n for n, _ in out}) != len(out):
        raise M2DError("--objective: the same metric is given twice")
    return out


class Sweep:
    """One sweep invocation (fresh or ``--resume``): checks, parent run, Ray, Tuner, reconciliation."""

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str], sweep: str):
        self.parser, self.args, self.argv, self.sweep = parser, args, argv, sweep
        self.experiment = args.experiment_name or f"m2d-{sweep.replace('_', '-')}" + ("-smoke" if args.smoke else "")
        self.storage = Path(args.storage_path or tracking.m2d_home() / "ray_results").expanduser().resolve()
        self.rows: dict[str, dict] = {}  # a study's rows (label -> preset + overrides); empty for a sweep

    # -- checks (no Ray yet) -----------------------------------------------------------------------------
    def _resume_state(self) -> tuple[Path, dict] | None:
        """On --resume: the run dir and its saved state; the saved arguments replace this call's."""
        if not self.args.resume:
            return None
        if self.args.resume == "latest":
            found = sorted((p for p in self.storage.glob(f"{self.experiment}-*") if (p / STATE_FILE).is_file()),
                           key=lambda p: (p / STATE_FILE).stat().st_mtime)
            if not found:
                raise M2DError(f"--resume: no sweep of {self.experiment} under {self.storage}")
            run_dir = found[-1]
        else:
            run_dir = Path(self.args.resume).expanduser().resolve()
            if not (run_dir / STATE_FILE).is_file():
                raise M2DError(f"--resume: {run_dir} is not a sweep run dir (no {STATE_FILE})")
        state = read_state(run_dir / STATE_FILE)
        saved = self.parser.parse_args(state["argv"])
        for keep in ("address", "tracking_uri", "fault_at_step"):  # this call's environment
            if getattr(self.args, keep) not in (None, 0):
                setattr(saved, keep, getattr(self.args, keep))
        saved.tracking_uri = saved.tracking_uri or state["tracking_uri"]
        saved.resume = str(run_dir)
        self.args = saved
        return run_dir, state

    def _base(self) -> dict:
        a = self.args
        base = deep_merge(SWEEP_DEFAULTS, SMOKE) if a.smoke else dict(SWEEP_DEFAULTS)
        data_dir = a.data_dir or os.environ.get("M2D_DATA_DIR")
        if data_dir:  # explicit and absolute: workers may start elsewhere (job copy, other nodes)
            base = deep_merge(base, {"data": {"data_dir": str(Path(data_dir).expanduser().resolve())}})
        return deep_merge(base, parse_overrides(a.sets))

    def _check(self):
        from .distributed import choose_backend, load_space
        from .preflight import check_run

        a = self.args
        for flag, value, low in (("--num-samples", a.num_samples, 1), ("--workers-per-trial", a.workers_per_trial, 1),
                                 ("--max-concurrent", a.max_concurrent, 1), ("--max-failures", a.max_failures, -1)):
            if value is not None and value < low:
                raise M2DError(f"{flag}: must be >= {low}, got {value}")
        if not (0 <= a.gpus_per_trial < math.inf and 0 < a.cpus_per_worker < math.inf):  # NaN fails both
            raise M2DError(f"--gpus-per-trial must be >= 0 and --cpus-per-worker > 0, got {a.gpus_per_trial:g} and "
                           f"{a.cpus_per_worker:g}")
        if not 0 < a.schedule_timeout < math.inf:
            raise M2DError(f"--schedule-timeout: must be a positive number of seconds, got {a.schedule_timeout:g}")
        objectives = parse_objectives(a.objective)
        base = self._base()
        cfg = load_config(a.preset, base)
        for name, _ in objectives:
            if name.split("/")[0] not in cfg.eval.datasets:
                raise M2DError(f"--objective: {name} needs {name.split('/')[0]} in eval.datasets "
                               f"(now {', '.join(cfg.eval.datasets)})")
        check_run(cfg)
        space = load_space(a.space, validate=lambda over: check_run(load_config(a.preset, deep_merge(base, over))))
        backend = choose_backend(a.workers_per_trial, a.backend)
        from .mining import premine

        premine([cfg], "sweep")
        return objectives, base, cfg, space, backend

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> int:
        from .distributed import TrialSetup, trial_bundles

        resumed = self._resume_state()
        a = self.args
        uri = tracking.resolve_tracking_uri(a.tracking_uri)
        tracking.check_tracking(uri)  # first: a dead server is reported within seconds
        tracking.check_storage(self.storage)
        objectives, base, cfg, space, backend = self._check()
        setup = TrialSetup(preset=str(a.preset), base=base, space=space, tracking_uri=uri, experiment_id="",
                           parent_run_id="", run_dir="", workers=a.workers_per_trial, cpus_per_worker=a.cpus_per_worker,
                           gpus_per_trial=a.gpus_per_trial, backend=backend, max_failures=a.max_failures,
                           fault_at_step=a.fault_at_step, rows=self.rows)
        local = will_start_local(a.address)
        if local:  # a cluster of this machine's size: a trial that cannot fit is refused before Ray starts
            _refuse_unschedulable([local_resources()], trial_bundles(setup), "this machine")
        init_ray(a.address)
        try:
            if not local:
                wait_for_resources(trial_bundles(setup), a.schedule_timeout)
            return self._tune(uri, setup, resumed, objectives, cfg)
        finally:
            import ray

            ray.shutdown()  # stops the local cluster, or leaves the joined one

    def _open_runs(self, mlf, uri: str, resumed, objectives, cfg, setup, num_samples: int):
        """The sweep's parent run (new, or the resumed one set RUNNING again) and its run dir."""
        a = self.args
        experiment_id = tracking.ensure_experiment(mlf, self.experiment if not resumed else resumed[1]["experiment"],
                                                   uri)
        tags = {"m2d.sampler_seed": str(a.seed), "m2d.method": cfg.method.name, "m2d.preset": str(a.preset),
                **tracking.data_checksums(cfg)}
        commit = tracking.git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if resumed:
            run_dir, state = resumed
            parent = state["parent_run_id"]
            mlf.update_run(parent, status="RUNNING")
            stale = tracking.close_stale(mlf, experiment_id, parent)  # resumed trials reopen their own run
            print(f"sweep: resuming {run_dir} (MLflow parent run {parent}; {stale} stale trial runs closed)")
        else:
            run_dir = self.storage / f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
            params = {"sweep.script": self.sweep, "sweep.preset": str(a.preset), "sweep.space": Path(a.space).name,
                      "sweep.num_samples": str(num_samples), "sweep.objectives": json.dumps(objectives),
                      "sweep.sampler_seed": str(a.seed), "sweep.scheduler": a.scheduler,
                      "sweep.workers_per_trial": str(a.workers_per_trial), "sweep.backend": setup.backend,
                      "sweep.gpus_per_trial": str(a.gpus_per_trial), "sweep.smoke": str(a.smoke),
                      **tracking.flat_params(setup.base, prefix="base.")}
            parent = tracking.start_parent(mlf, experiment_id, run_dir.name, params,
                                           {**tags, tracking.SWEEP_TAG: run_dir.name})
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

        from .distributed import max_concurrent, restore_tuner

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
            if resumed:
                tuner = restore_tuner(str(run_dir), setup)
            else:
                tuner = self._new_tuner(setup, objectives, num_samples, concurrency, run_dir.name, cfg)
            print(f"sweep: backend {setup.backend}, {a.workers_per_trial} worker(s) per trial, "
                  f"{concurrency} trial(s) at a time")
            fit_started = time.perf_counter()
            results = tuner.fit()
            # the server may be down right now (a restart): wait for it, bounded, rather than lose the summary
            tracking.retry(tracking.log_metrics, mlf, parent, {"m2d/fit_s": time.perf_counter() - fit_started}, 0,
                           what="sweep summary")
            code = tracking.retry(self._finish, mlf, setup.experiment_id, parent, results, objectives,
                                  what="reconciling the MLflow runs")
            code = self._after(mlf, parent, run_dir, code)
            self._summarise(mlf, parent, run_dir)
            status = "FINISHED" if code == 0 else "FAILED"
            return code
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if parent is not None:
                try:  # trials this driver could not close (crash, Ctrl-C) must not stay RUNNING
                    end = "KILLED" if status == "KILLED" else "FAILED"
                    tracking.retry(tracking.close_stale, mlf, setup.experiment_id, parent, status=end,
                                   what="closing the trial runs", wait_s=60)
                    tracking.retry(mlf.set_terminated, parent, status=status, what="closing the sweep run", wait_s=60)
                except Exception as err:  # the server is gone: say so, keep the real error
                    print(f"sweep: warning: could not close MLflow run {parent} ({type(err).__name__}); "
                          "`--resume` closes it", file=sys.stderr)

    def _new_tuner(self, setup, objectives, num_samples: int, concurrency: int, run_name: str, cfg):
        from .distributed import build_tuner

        a = self.args
        return build_tuner(setup, objectives, num_samples, a.seed, a.scheduler, concurrency, str(self.storage),
                           run_name, cfg.train.max_steps, cfg.eval.every_steps)

    def _summarise(self, mlf, parent: str, run_dir: Path) -> None:
        """The parent run's comparison of every trial's grid (again on each --resume); a warning if it cannot be made,
        never a failed sweep: the trials' own runs hold everything it is made from."""
        from . import compare

        try:
            written = tracking.retry(tracking.log_sweep_summary, mlf, parent, run_dir / "summary", self.args.baseline,
                                     what="the sweep's summary")
        except M2DError as err:
            print(f"sweep: warning: no summary on the parent run: {err}", file=sys.stderr)
            return
        for ds, metric, rows in written["leaderboards"]:
            print("\n" + compare.format_leaderboard(rows, f"{ds} {metric} (vs_baseline: mean difference to the "
                                                         f"baseline trial over shared cells)"))
        print(f"sweep: summary figures and leaderboards on the parent run (summary/) and in {run_dir / 'summary'}")

    def _after(self, mlf, parent: str, run_dir: Path, code: int) -> int:
        """After the trials (a study writes its tables here); returns the exit code."""
        return code

    def _finish(self, mlf, experiment_id: str, parent: str, results, objectives) -> int:
        """Reconcile MLflow with Tune's final view, log the best trial(s) on the parent, print a table."""
        by_id = {_trial_id(r): r for r in results}
        for run in tracking.children(mlf, experiment_id, parent):
            trial_id = run.data.tags.get(tracking.TRIAL_TAG)
            if trial_id not in by_id:  # started by a killed driver after Tune's last state save: not a trial
                mlf.set_tag(run.info.run_id, "m2d.orphaned", "true")
                if run.info.status == "RUNNING":
                    mlf.set_terminated(run.info.run_id, status="KILLED")
                mlf.delete_run(run.info.run_id)
            elif run.info.status in ("RUNNING", "KILLED"):  # KILLED: closed as stale on resume, yet Tune has it done
                result = by_id[trial_id]
                if not result.error and not (result.metrics or {}).get("final"):
                    mlf.set_tag(run.info.run_id, "m2d.stopped_early", "true")
                mlf.set_terminated(run.info.run_id, status="FAILED" if result.error else "FINISHED")
        rows = []
        for trial_id, r in sorted(by_id.items()):
            values = [(r.metrics or {}).get(m) for m, _ in objectives]
            rows.append((trial_id, "ERROR" if r.error else "ok", values, dict(r.config or {})))
        finished = [row for row in rows if (by_id[row[0]].metrics or {}).get("final")]  # not ASHA-stopped
        best = _best(finished or rows, objectives)
        if len(objectives) == 1 and best:
            value = next(v for t, _, v, _ in rows if t == best[0])[0]
            tracking.log_metrics(mlf, parent, {f"best/{objectives[0][0]}": value}, 0)
        mlf.set_tag(parent, "m2d.best_trials" if len(objectives) > 1 else "m2d.best_trial", ",".join(best))
        print(f"\n{'trial':<14} {'status':<6} " + " ".join(f"{m:>28}" for m, _ in objectives) + "  params")
        for trial_id, status, values, cfg in rows:
            vals = " ".join(f"{v:>28.4f}" if isinstance(v, (int, float)) else f"{'-':>28}" for v in values)
            print(f"{trial_id:<14} {status:<6} {vals}  {cfg}{'  *' if trial_id in best else ''}")
        print(f"(* = {'Pareto front' if len(objectives) > 1 else 'best'}; MLflow parent run {parent})")
        return 1 if any(status == "ERROR" for _, status, _, _ in rows) else 0


def _trial_id(result) -> str:
    """Tune's trial id: from the metrics, or from the trial dir name if the trial never reported."""
    import re

    if result.metrics and result.metrics.get("trial_id"):
        return str(result.metrics["trial_id"])
    found = re.search(r"_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_\d+_", Path(result.path).name)
    return found.group(1) if found else Path(result.path).name


def _best(rows: list, objectives: list[tuple[str, str]]) -> list[str]:
    """The best trial (one objective) or the Pareto front (several), over trials that reported every objective."""
    sign = [1 if mode == "max" else -1 for _, mode in objectives]
    scored = [(t, [s * v for s, v in zip(sign, values)]) for t, _, values, _ in rows
              if all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)]
    if not scored:
        return []
    if len(objectives) == 1:
        return [max(scored, key=lambda x: x[1][0])[0]]
    dominated = lambda a, b: all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))  # noqa: E731
    return [t for t, v in scored if not any(dominated(v, w) for _, w in scored)]


def init_ray(address: str | None) -> None:
    """``--address`` or ``$RAY_ADDRESS`` (set by ``ray job submit``): join that cluster; else start a local Ray
    that listens on loopback only (:mod:`matryoshka2d.cluster`)."""
    from .cluster import start_or_join

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # Loss-only reports (between evaluations) carry no objective; ASHA skips them, Tune must not reject them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    start_or_join(address)


def read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not {"parent_run_id", "experiment", "argv"} <= set(state):
            raise ValueError("missing keys")
    except (OSError, ValueError) as err:
        raise M2DError(f"--resume: {path} is unreadable ({err}); start a new sweep (the MLflow runs stay)") from None
    return state


def write_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)  # atomic: a killed driver never leaves half a state file


def local_resources() -> dict[str, float]:
    """What ``ray.init()`` gives a local cluster: every CPU of this machine, its CUDA GPUs."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def _refuse_unschedulable(nodes: list[dict], bundles: list[dict], where: str) -> None:
    from .distributed import unschedulable

    problem = unschedulable(nodes, bundles)
    if problem:
        raise M2DError(f"--workers-per-trial/--cpus-per-worker/--gpus-per-trial: {problem} ({where}); lower them "
                       "or join a bigger cluster with --address")


def wait_for_resources(bundles: list[dict], timeout: float) -> None:
    """On a cluster this driver joined, which may autoscale: ask the autoscaler for one trial's resources and wait
    up to ``timeout`` s for them to appear (a fixed cluster never grows: the wait ends in one line). The request
    is withdrawn once a trial holds resources, so the autoscaler follows the trials' own demand from then on."""
    import threading

    import ray
    from ray.autoscaler.sdk import request_resources

    from .distributed import unschedulable

    def alive_nodes() -> list[dict]:
        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

    problem = unschedulable(alive_nodes(), bundles)
    if problem is None:
        return
    print(f"sweep: waiting up to {timeout:g} s (--schedule-timeout) for the cluster to grow: {problem}", flush=True)
    request_resources(bundles=bundles)
    deadline = time.monotonic() + timeout
    while (problem := unschedulable(alive_nodes(), bundles)) and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    if problem:
        request_resources(bundles=[])
        raise M2DError(f"--schedule-timeout: after {timeout:g} s, {problem}; lower --workers-per-trial/"
                       "--cpus-per-worker/--gpus-per-trial or let the cluster grow")

    def release() -> None:  # daemon: ends with the driver at the latest
        end = time.monotonic() + timeout
        while time.monotonic() < end and ray.is_initialized():
            total, free = ray.cluster_resources(), ray.available_resources()
            if any(free.get(k, 0) < total.get(k, 0) - 1e-6 for k in ("CPU", "GPU")):
                break
            time.sleep(1.0)
        if ray.is_initialized():
            request_resources(bundles=[])

    threading.Thread(target=release, daemon=True, name="m2d-release-request").start()
