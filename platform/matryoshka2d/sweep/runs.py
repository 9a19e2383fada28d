"""The sweep's MLflow runs, their whole lifecycle: one parent per sweep, one child per trial, kept true to Tune's view.

Ray Tune has no nested runs, so the driver creates the parent (:func:`start_parent`) and each trial its child
(:func:`open_child`, linked by ``mlflow.parentRunId``, found again by ``m2d.trial_id`` on a retry or resume). Tune can end a trial
without the trial closing its run (ASHA kills the actor, retries run out), and a killed driver leaves runs
RUNNING: :class:`RunCloser` closes them as Tune ends trials, :func:`reconcile` after the fit, :func:`close` on
every way out.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune

from .. import storage, tracking
from ..errors import M2DError
from ..tracking import Tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ..config import Config


# -- child runs: one per trial, found again by its trial id ------------------------------------------------------
def find_child(mlf: "MlflowClient", experiment_id: str, parent_id: str, trial_id: str):
    runs = mlf.search_runs([experiment_id], filter_string=f"tags.`{Tag.PARENT}` = '{parent_id}' and "
                                                          f"tags.`{Tag.TRIAL}` = '{trial_id}'", max_results=2)
    return runs[0] if runs else None


def open_child(mlf: "MlflowClient", experiment_id: str, parent_id: str, trial_id: str, run_name: str,
               params: dict[str, str], tags: dict[str, str]) -> str:
    """The trial's run: found by its trial-id tag (retry, resume) and set RUNNING again, else created."""
    found = find_child(mlf, experiment_id, parent_id, trial_id)
    if found is not None:
        run_id = found.info.run_id
        tracking.log_params(mlf, run_id, params)  # again: a server lost between create and params left none
        mlf.update_run(run_id, status="RUNNING")
        mlf.set_tag(run_id, Tag.RESTARTS, str(int(found.data.tags.get(Tag.RESTARTS, "0")) + 1))
        return run_id
    run = mlf.create_run(experiment_id, run_name=run_name,
                         tags={**tags, Tag.PARENT: parent_id, Tag.TRIAL: trial_id, Tag.KIND: "trial"})
    tracking.log_params(mlf, run.info.run_id, params)
    return run.info.run_id


def finish_child(mlf: "MlflowClient", run_id: str, trial_id: str) -> None:
    """A trial that trained to the end closes its own run; failures are left to Tune's retry (the driver closes what
    stays failed: :class:`RunCloser`, :func:`reconcile`)."""
    tracking.retry(mlf.set_terminated, run_id, status="FINISHED", what=f"trial {trial_id}: close run")


def close_stale(mlf: "MlflowClient", experiment_id: str, parent_id: str, status: str = "KILLED") -> int:
    """Child runs still RUNNING (their process died with a killed driver) -> ``status``; returns how many."""
    stale = [r for r in tracking.children(mlf, experiment_id, parent_id) if r.info.status == "RUNNING"]
    for run in stale:
        mlf.set_terminated(run.info.run_id, status=status)
    return len(stale)


# -- the parent --------------------------------------------------------------------------------------------------
def tags(cfg: "Config", preset: str, sampler_seed: int) -> dict[str, str]:
    """What the parent and every trial run are tagged with: method, preset, seed, data checksums, git commit."""
    out = {Tag.SAMPLER_SEED: str(sampler_seed), Tag.METHOD: cfg.method.name, Tag.PRESET: str(preset),
           **tracking.data_checksums(cfg)}
    commit = tracking.git_commit()
    if commit:
        out["mlflow.source.git.commit"] = commit
    return out


def start_parent(mlf: "MlflowClient", experiment_id: str, run_name: str, sweep: dict, base: dict,
                 tags: dict[str, str]) -> str:
    """A new sweep's parent run: its flags as ``sweep.*`` params, the overrides every trial shares as ``base.*``."""
    run = mlf.create_run(experiment_id, run_name=run_name,
                         tags={**tags, Tag.SWEEP: run_name, Tag.KIND: "sweep"})
    params = {**{f"sweep.{k}": str(v) for k, v in sweep.items()}, **tracking.flat_params(base, prefix="base.")}
    tracking.log_params(mlf, run.info.run_id, params)
    return run.info.run_id


def reopen_parent(mlf: "MlflowClient", experiment_id: str, parent: str) -> int:
    """A resumed sweep's parent set RUNNING again; its trial runs left RUNNING by the killed driver are closed (resumed
    trials reopen their own run). Returns how many were closed."""
    mlf.update_run(parent, status="RUNNING")
    return close_stale(mlf, experiment_id, parent)


def summarise(mlf: "MlflowClient", parent: str, run_dir: Path, baseline: str | None, method: str) -> None:
    """The parent run's comparison of every trial's grid (again on each --resume); a warning if it cannot be made,
    never a failed sweep: the trials' own runs hold everything it is made from. ``method``: the base preset's, whose
    first trial is the default baseline."""
    from ..choose import compare

    try:
        written = tracking.retry(log_summary, mlf, parent, run_dir / "summary", baseline, method,
                                 what="the sweep's summary")
    except M2DError as err:
        print(f"sweep: warning: no summary on the parent run: {err}", file=sys.stderr)
        return
    for ds, metric, rows in written["leaderboards"]:
        print("\n" + compare.format_leaderboard(rows, f"{ds} {metric} (vs_baseline: mean difference to the "
                                                     f"baseline trial over shared cells)"))
    print(f"sweep: summary figures and leaderboards on the parent run (summary/) and in {run_dir / 'summary'}")


def log_summary(mlf: "MlflowClient", parent: str, out_dir: Path, baseline: str | None, method: str) -> dict:
    """On a sweep's parent run: every trial's grid as small multiples (one colour scale), each trial minus the
    baseline trial (``baseline``, else the first trial of ``method``, the sweep's own ``m2d.method``), the best trial
    per cell, and a leaderboard table; as files under ``summary/`` and as images keyed
    ``sweep/<dataset>/<metric>/<figure>``. Written again on every (resumed) end, replacing the last. Returns what
    :func:`compare.write` wrote."""
    import pandas as pd

    from ..choose import compare

    entries = compare.unique_labels(compare.from_mlflow(mlf, parent, Path(out_dir) / "grids"))
    entries, base, written = compare.run(entries, out_dir, baseline, method=method)
    step = len(entries)
    for ds, metric, kind, path in written["figures"]:
        mlf.log_artifact(parent, str(path), artifact_path="summary")
        tracking.Upload(path, key=tracking.Key.sweep_figure(ds, metric, kind), step=step).send(mlf, parent)
    tables = []
    for path in written["tables"]:
        mlf.log_artifact(parent, str(path), artifact_path="summary")
    for ds, metric, rows in written["leaderboards"]:
        table = Path(out_dir) / f"leaderboard_{compare.safe(ds)}_{compare.safe(metric)}.json"
        pd.DataFrame(rows).to_json(table, orient="split", index=False)
        mlf.log_artifact(parent, str(table), artifact_path="summary")
        tables.append(f"summary/{table.name}")
    mlf.set_tag(parent, Tag.BASELINE_TRIAL, entries[base].run_id or "")
    for key, value in tracking.table_tag(*tables).items():
        mlf.set_tag(parent, key, value)
    return written


def close(mlf: "MlflowClient", experiment_id: str, parent: str, status: str) -> None:
    """On every way out of the driver: trials it could not close (crash, Ctrl-C) and the parent get ``status``."""
    try:
        end = "KILLED" if status == "KILLED" else "FAILED"
        tracking.retry(close_stale, mlf, experiment_id, parent, status=end, what="closing the trial runs",
                       wait_s=60)
        tracking.retry(mlf.set_terminated, parent, status=status, what="closing the sweep run", wait_s=60)
    except Exception as err:  # the server is gone: say so, keep the real error
        print(f"sweep: warning: could not close MLflow run {parent} ({type(err).__name__}); `--resume` closes it",
              file=sys.stderr)


def reconcile(mlf: "MlflowClient", experiment_id: str, parent: str, results, objectives: list[tuple[str, str]]) -> int:
    """MLflow made to agree with Tune's final view: every trial run closed (ASHA-stopped ones tagged), runs Tune never
    knew (started by a killed driver after its last state save) deleted; the best trial(s) on the parent and a table
    printed. Returns the exit code: 1 if a trial errored."""
    by_id = {_trial_id(r): r for r in results}
    for run in tracking.children(mlf, experiment_id, parent):
        trial_id = run.data.tags.get(Tag.TRIAL)
        if trial_id not in by_id:  # started by a killed driver after Tune's last state save: not a trial
            mlf.set_tag(run.info.run_id, Tag.ORPHANED, "true")
            if run.info.status == "RUNNING":
                mlf.set_terminated(run.info.run_id, status="KILLED")
            mlf.delete_run(run.info.run_id)
        elif run.info.status in ("RUNNING", "KILLED"):  # KILLED: closed as stale on resume, yet Tune has it done
            result = by_id[trial_id]
            if not result.error and not (result.metrics or {}).get("final"):
                mlf.set_tag(run.info.run_id, Tag.STOPPED_EARLY, "true")
            mlf.set_terminated(run.info.run_id, status="FAILED" if result.error else "FINISHED")
    rows = []
    for trial_id, r in sorted(by_id.items()):
        values = [(r.metrics or {}).get(m) for m, _ in objectives]
        rows.append((trial_id, "ERROR" if r.error else "ok", values, dict(r.config or {})))
    finished = [row for row in rows if (by_id[row[0]].metrics or {}).get("final")]  # not ASHA-stopped
    best = _best(finished or rows, objectives)
    if len(objectives) == 1 and best:
        value = next(v for t, _, v, _ in rows if t == best[0])[0]
        tracking.log_metrics(mlf, parent, {tracking.Key.best(objectives[0][0]): value}, 0)
    mlf.set_tag(parent, Tag.BEST_TRIALS if len(objectives) > 1 else Tag.BEST_TRIAL, ",".join(best))
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


class RunCloser(tune.Callback):
    """Driver-side: closes a trial's child run when Tune ends the trial, whatever the trainable managed.

    An ASHA-stopped trial's actor is killed before the trainable can close its run (-> FINISHED, tagged
    ``m2d.stopped_early``); an errored trial (out of retries) -> FAILED.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, run_dir: str = ""):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.run_dir = run_dir

    def _close(self, trial, status: str) -> None:
        try:
            mlf = tracking.client(self.tracking_uri)
            run = find_child(mlf, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run is None or run.info.status != "RUNNING":
                return
            if status == "FINISHED" and not (trial.last_result or {}).get("final"):
                mlf.set_tag(run.info.run_id, Tag.STOPPED_EARLY, "true")
            mlf.set_terminated(run.info.run_id, status=status)
        except Exception as err:  # never take the sweep down over bookkeeping; the driver re-checks at the end
            print(f"sweep: warning: could not close the MLflow run of trial {trial.trial_id}: {err}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")
        # a finished trial never resumes: its local step checkpoints (hundreds of MB for MiniLM) are dead
        # weight; Ray keeps its own last copy (num_to_keep=1) until the run dir is deleted
        if self.run_dir:
            shutil.rmtree(Path(self.run_dir) / storage.TRIALS / trial.trial_id / storage.CHECKPOINTS, ignore_errors=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED")
