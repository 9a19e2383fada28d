"""MLflow glue for sweeps: where runs are stored, parent/child runs, per-cell metrics and artifacts.

Ray Tune has no nested runs, so a sweep is ONE parent run (created on the driver) and one child run per
trial, linked by the ``mlflow.parentRunId`` tag that MLflow's UI nests on. Child runs are found again by
their ``m2d.trial_id`` tag, so a retried or resumed trial reuses its run instead of adding a duplicate.
Every call goes through an explicit ``MlflowClient``, never the fluent API: trials log from Ray worker
processes, where a process-global "active run" would be wrong or missing.

Default store: ``sqlite:///$M2D_HOME/mlflow.db`` (``M2D_HOME`` defaults to ``~/.matryoshka2d``), an
absolute path, because under ``ray job submit`` the working directory is a throwaway copy. Artifacts of
that store go to ``$M2D_HOME/mlartifacts`` (absolute ``file://`` URI, set on the experiment).
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import M2DError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .config import Config
    from .evaluate.grid import GridResult

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "m2d.trial_id"
SWEEP_TAG = "m2d.sweep"
SUMMARIES = ("grid_mean", "sublayer_mean", "lowdim_mean", "full", "worst_cell")


# -- where runs go ----------------------------------------------------------------------------------------
def m2d_home() -> Path:
    """``$M2D_HOME`` or ``~/.matryoshka2d``: the absolute home of the default MLflow store and Ray results."""
    return Path(os.environ.get("M2D_HOME") or "~/.matryoshka2d").expanduser().resolve()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``--tracking-uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///$M2D_HOME/mlflow.db``; sqlite paths made absolute.

    A bare ``*.db`` path is taken as SQLite. Plain folders / ``file:`` stores are refused: MLflow 3.17
    no longer writes file stores.
    """
    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip() or f"sqlite:///{m2d_home() / 'mlflow.db'}"
    if uri.startswith(("http://", "https://", "databricks")):
        return uri.rstrip("/")
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).expanduser()
    elif "://" not in uri and uri.endswith(".db"):
        path = Path(uri).expanduser()
    else:
        raise M2DError(f"tracking uri: {uri!r} is not supported; use sqlite:////abs/path/mlflow.db or http://host:port "
                       "(MLflow 3.17 refuses file stores)")
    path = path.resolve()
    return f"sqlite:///{path}"


def artifact_root(uri: str) -> str | None:
    """Absolute ``file://`` artifact root next to a SQLite DB (``<db dir>/mlartifacts``); servers decide their own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, before any training: a dead server or an unwritable DB folder."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(f"{uri}/health", timeout=timeout)
        except requests.RequestException as err:
            reason = type(err).__name__
            if isinstance(err, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(err, requests.Timeout):
                reason = f"no answer within {timeout:g} s"
            raise M2DError(f"tracking server {uri} unreachable ({reason})") from None
        if response.status_code != 200:
            raise M2DError(f"tracking server {uri} unreachable (GET /health answered HTTP {response.status_code})")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise M2DError(f"tracking uri: cannot create {folder} ({err.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise M2DError(f"tracking uri: {folder} is not writable")


def client(uri: str) -> "MlflowClient":
    """A client with short HTTP timeouts and few retries, so a server that dies mid-sweep does not hang trials."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlf: "MlflowClient", name: str, uri: str) -> str:
    """The experiment's id, creating it with an absolute artifact location (restoring it if deleted)."""
    exp = mlf.get_experiment_by_name(name)
    if exp is None:
        return mlf.create_experiment(name, artifact_location=artifact_root(uri))
    if exp.lifecycle_stage == "deleted":
        mlf.restore_experiment(exp.experiment_id)
    return exp.experiment_id


# -- params and tags --------------------------------------------------------------------------------------
def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"method.kl.weight": "0.3"}``; lists/None become strings (``log_params`` needs scalars)."""
    from .config import flatten

    out = {}
    for key, value in flatten(data).items():
        text = "null" if value is None else str(value) if not isinstance(value, (list, dict, tuple)) else _compact(value)
        out[f"{prefix}{key}"] = text[:6000]  # MLflow's param value limit
    return out


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def git_commit(root: Path | None = None) -> str | None:
    """HEAD of the project checkout (or ``$M2D_GIT_COMMIT``); None outside git, e.g. a job copy without .git."""
    if os.environ.get("M2D_GIT_COMMIT"):
        return os.environ["M2D_GIT_COMMIT"]
    root = root or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def data_checksums(cfg: "Config") -> dict[str, str]:
    """``{"m2d.data.<file>": sha256[:16]}`` for the training and evaluation files this config reads."""
    from .data.registry import file_checksums

    task, name = cfg.method.task_loss, cfg.data.train
    if task == "mnrl":
        reads = [(name, "train" if name == "scifact" else cfg.data.train_split)]
    else:
        reads = [("stsb" if name == "snli" else name, "train")]
    reads += [(ds, cfg.eval.split) for ds in cfg.eval.datasets]
    tags: dict[str, str] = {}
    for ds, split in reads:
        try:
            sums = file_checksums(ds, split, cfg.data.data_dir)
        except M2DError:
            continue  # reported by the trainer itself, with a better message
        tags.update({f"m2d.data.{path}": digest for path, digest in sums.items()})
    return tags


# -- runs -------------------------------------------------------------------------------------------------
def start_parent(mlf: "MlflowClient", experiment_id: str, run_name: str, params: dict[str, str],
                 tags: dict[str, str]) -> str:
    run = mlf.create_run(experiment_id, run_name=run_name, tags={**tags, "m2d.kind": "sweep"})
    log_params(mlf, run.info.run_id, params)
    return run.info.run_id


def find_child(mlf: "MlflowClient", experiment_id: str, parent_id: str, trial_id: str):
    runs = mlf.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                                          f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=2)
    return runs[0] if runs else None


def child_run(mlf: "MlflowClient", experiment_id: str, parent_id: str, trial_id: str, run_name: str,
              params: dict[str, str], tags: dict[str, str]) -> str:
    """The trial's run: found by its trial-id tag (retry, resume) and set RUNNING again, else created."""
    found = find_child(mlf, experiment_id, parent_id, trial_id)
    if found is not None:
        run_id = found.info.run_id
        mlf.update_run(run_id, status="RUNNING")
        mlf.set_tag(run_id, "m2d.restarts", str(int(found.data.tags.get("m2d.restarts", "0")) + 1))
        return run_id
    run = mlf.create_run(experiment_id, run_name=run_name,
                         tags={**tags, PARENT_TAG: parent_id, TRIAL_TAG: trial_id, "m2d.kind": "trial"})
    log_params(mlf, run.info.run_id, params)
    return run.info.run_id


def children(mlf: "MlflowClient", experiment_id: str, parent_id: str) -> list:
    return mlf.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=10000)


def close_stale(mlf: "MlflowClient", experiment_id: str, parent_id: str, status: str = "KILLED") -> int:
    """Child runs still RUNNING (their process died with a killed driver) -> ``status``; returns how many."""
    stale = [r for r in children(mlf, experiment_id, parent_id) if r.info.status == "RUNNING"]
    for run in stale:
        mlf.set_terminated(run.info.run_id, status=status)
    return len(stale)


def log_params(mlf: "MlflowClient", run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for chunk in _chunks(items, 100):  # MLflow's per-request limit
        mlf.log_batch(run_id, params=chunk)


def log_metrics(mlf: "MlflowClient", run_id: str, metrics: dict[str, float], step: int) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for chunk in _chunks(items, 1000):
        mlf.log_batch(run_id, metrics=chunk)


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


# -- grid results -----------------------------------------------------------------------------------------
def cell_key(dataset: str, metric: str, layer: int, dim: int) -> str:
    return f"{dataset}/{metric}/L{layer}_D{dim}"


def grid_summaries(grid: "GridResult") -> dict[str, float]:
    """``summarize(flat=True)`` plus ``<ds>/<metric>/worst_cell``: the weakest sub-layer cell (all cells if one layer).

    ``worst_cell`` is the second objective of multi-objective sweeps: a method can raise the grid mean
    while one small cell collapses.
    """
    import numpy as np

    from .evaluate.grid import summarize

    out = summarize(grid, flat=True)
    for ds in grid.datasets():
        for metric in grid.metrics(ds):
            _, _, values = grid.matrix(ds, metric)
            sub = values[:-1, :] if values.shape[0] > 1 else values
            finite = sub[np.isfinite(sub)]
            out[f"{ds}/{metric}/worst_cell"] = float(finite.min()) if finite.size else math.nan
    return out


def cell_metrics(grid: "GridResult") -> dict[str, float]:
    """Every cell as ``<dataset>/<metric>/L<l>_D<d>``: with :func:`grid_summaries`, the MLflow columns to compare
    trials on."""
    return {cell_key(r.dataset, r.metric, r.layer, r.dim): r.value for r in grid.rows}


def log_final_artifacts(mlf: "MlflowClient", run_id: str, out_dir: Path, grid: "GridResult") -> list[Path]:
    """grid.csv, config.yaml and one heatmap PNG per dataset x metric (written next to them in ``out_dir``)."""
    from .plots import heatmap, heatmap_name

    out_dir = Path(out_dir)
    files = [p for p in (out_dir / "grid.csv", out_dir / "config.yaml") if p.is_file()]
    plots = out_dir / "heatmaps"
    plots.mkdir(exist_ok=True)
    for ds in grid.datasets():
        for metric in grid.metrics(ds):
            files.append(heatmap(grid, ds, metric, plots / heatmap_name(ds, metric)))
    for path in files:
        mlf.log_artifact(run_id, str(path), artifact_path="heatmaps" if path.parent == plots else None)
    return files
