"""MLflow glue: where runs are stored, child runs, per-cell metrics and artifacts, an unreachable server.

Ray Tune has no nested runs, so a sweep is ONE parent run (created on the driver, :mod:`.sweep.runs`) and one
child run per trial, linked by the ``mlflow.parentRunId`` tag that MLflow's UI nests on. Child runs are found again by
their ``m2d.trial_id`` tag, so a retried or resumed trial reuses its run instead of adding a duplicate.
Every call goes through an explicit ``MlflowClient``, never the fluent API: trials log from Ray worker
processes, where a process-global "active run" would be wrong or missing.

Default store: ``sqlite:///$M2D_HOME/mlflow.db`` (``M2D_HOME`` defaults to ``~/.matryoshka2d``), an
absolute path, because under ``ray job submit`` the working directory is a throwaway copy. Artifacts of
that store go to ``$M2D_HOME/mlartifacts`` (absolute ``file://`` URI, set on the experiment).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from . import storage
from .config import m2d_home
from .errors import M2DError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .config import Config
    from .evaluate.grid import GridResult

class Tag:
    """Every run tag the platform writes or reads, in one block (``tests/test_layout.py`` finds no ``"m2d.`` literal
    elsewhere)."""

    PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a trial under its sweep
    KIND = "m2d.kind"  # "sweep" (a parent) or "trial"
    SWEEP = "m2d.sweep"  # the sweep's run-dir name, on the parent and every trial
    TRIAL = "m2d.trial_id"  # Tune's trial id: a retried or resumed trial finds its run again
    METHOD = "m2d.method"
    PRESET = "m2d.preset"
    SAMPLER_SEED = "m2d.sampler_seed"
    TRAIN_SEED = "m2d.train_seed"
    RESTARTS = "m2d.restarts"  # how often a trial's run was reopened (retries, resumes)
    RESUMED_FROM = "m2d.resumed_from"  # the checkpoint a restarted trial went on from
    RESUMED_FROM_STEP = "m2d.resumed_from_step"
    STOPPED_EARLY = "m2d.stopped_early"  # ASHA stopped it: FINISHED, but not trained to max_steps
    ORPHANED = "m2d.orphaned"  # started by a killed driver after Tune's last state save: deleted
    BASELINE_TRIAL = "m2d.baseline_trial"  # the parent's difference heatmaps subtract this run
    BEST_TRIAL = "m2d.best_trial"
    BEST_TRIALS = "m2d.best_trials"  # a multi-objective sweep's Pareto front
    DATA = "m2d.data."  # + a data file's path: its sha256 prefix
    EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens on runs, not GenAI traces


class Key:
    """The metric and image keys beside the grid's own (``<ds>/<metric>/<summary>``, :func:`cell_key`)."""

    LOOP_S = "m2d/loop_s"  # a trial's training loop, seconds
    TRIAL_S = "m2d/trial_s"  # the whole trial (loop + start-up + evaluation + uploads)
    OVERHEAD_S = "m2d/overhead_s"  # trial_s - loop_s: what the platform costs (bench/sweep_overhead.py)
    FIT_S = "m2d/fit_s"  # the sweep's Tuner.fit, on the parent

    @staticmethod
    def best(objective: str) -> str:
        """The parent's best value of a single-objective sweep."""
        return f"best/{objective}"

    @staticmethod
    def heatmap(dataset: str, metric: str) -> str:
        """A trial's heatmap image at each evaluation step (the chart view's step slider)."""
        return mlflow_key(f"heatmap/{dataset}/{metric}")

    @staticmethod
    def sweep_figure(dataset: str, metric: str, kind: str) -> str:
        """The parent's comparison figures: ``runs``, ``vs_baseline``, ``best_run``."""
        return mlflow_key(f"sweep/{dataset}/{metric}/{kind}")


# -- where runs go ----------------------------------------------------------------------------------------
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
    """Fail fast, in one line, before any run exists: a dead server, a server that is not MLflow, an unwritable
    DB folder, a file that is not a SQLite database."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise M2DError(f"tracking uri: cannot create {folder} ({err.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise M2DError(f"tracking uri: {folder} is not writable")
        if path.exists():
            _check_sqlite(path)


def _check_server(uri: str, timeout: float) -> None:
    import requests

    def get(route: str):
        try:
            return requests.get(f"{uri}{route}", timeout=timeout)
        except requests.RequestException as err:
            reason = type(err).__name__
            if isinstance(err, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(err, requests.Timeout):
                reason = f"no answer within {timeout:g} s"
            raise M2DError(f"tracking server {uri} unreachable ({reason})") from None

    response = get("/health")
    if response.status_code != 200:
        raise M2DError(f"tracking server {uri} unreachable (GET /health answered HTTP {response.status_code})")
    # /health alone proves little (any web server has one): ask the REST API for an experiment
    route = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    response = get(route)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not (response.status_code == 200 or body.get("error_code")):
        raise M2DError(f"tracking server {uri} answers /health but not the MLflow API "
                       f"(GET {route.split('?')[0]} answered HTTP {response.status_code}"
                       f"{'' if body is not None else ', not JSON'})")
    if response.status_code >= 500 or body.get("error_code") in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE"):
        raise M2DError(f"tracking server {uri} is not usable (MLflow API: {body.get('message', '')[:120]})")


def _check_sqlite(path: Path, flag: str = "tracking uri") -> set[str]:
    """The tables of a SQLite file, read in read-only mode (nothing is created or changed); not a database: one line."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise M2DError(f"{flag}: {path} is not a SQLite database ({err})") from None


STORE_TABLES = ("experiments", "runs")  # what every MLflow SQL store has, whatever its schema version


def read_only_client(uri: str | None, flag: str = "--tracking-uri") -> "MlflowClient":
    """A client for lookups only (compare, report, pick by run id): the store must already exist and be an MLflow
    store. MLflow's client creates a missing SQLite store, or adds its tables to any SQLite file it is pointed at, so
    the file is checked first, read-only; MLflow's INFO chatter is silenced (an error must be the only line)."""
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri, 5.0)
    elif uri.startswith("sqlite:///"):
        _check_store(Path(uri.removeprefix("sqlite:///")), flag)
    quiet_mlflow()
    return client(uri)


def _check_store(path: Path, flag: str) -> None:
    """``path`` exists and holds MLflow's tables (read in read-only mode: nothing is created or changed)."""
    if not path.is_file():
        raise M2DError(f"{flag}: {path} holds no MLflow store (no such file)")
    tables = _check_sqlite(path, flag)
    missing = [t for t in STORE_TABLES if t not in tables]
    if missing:
        raise M2DError(f"{flag}: {path} holds no MLflow store (no {' or '.join(missing)} table)")


def quiet_mlflow() -> None:
    """No INFO lines from MLflow or its schema migrations (alembic) on stderr."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str) -> "MlflowClient":
    """A client with short HTTP timeouts and few retries, so a server that dies mid-sweep does not hang trials, and no
    progress bar per downloaded artifact (a sweep's summary fetches every trial's grid)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlf: "MlflowClient", name: str, uri: str) -> str:
    """The experiment's id, creating it with an absolute artifact location (restoring it if deleted)."""
    exp = mlf.get_experiment_by_name(name)
    if exp is None:
        return mlf.create_experiment(name, artifact_location=artifact_root(uri), tags=dict([Tag.EXPERIMENT_KIND]))
    if exp.lifecycle_stage == "deleted":
        mlf.restore_experiment(exp.experiment_id)
    if Tag.EXPERIMENT_KIND[0] not in exp.tags:
        mlf.set_experiment_tag(exp.experiment_id, *Tag.EXPERIMENT_KIND)
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
    """``{"m2d.data.<file>": sha256[:16]}`` (:attr:`Tag.DATA`) for the training and evaluation files this config reads."""
    from .data.sources import checksums

    return {f"{Tag.DATA}{path}": digest for path, digest in checksums(cfg).items()}


# -- runs ------------------------------------------------------------------------------------------------
def children(mlf: "MlflowClient", experiment_id: str, parent_id: str) -> list:
    """The runs under a parent (a sweep's trials), for readers; their lifecycle is :mod:`.sweep.runs`'s."""
    return mlf.search_runs([experiment_id], filter_string=f"tags.`{Tag.PARENT}` = '{parent_id}'", max_results=10000)


# -- logging ---------------------------------------------------------------------------------------------
def log_params(mlf: "MlflowClient", run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for chunk in _chunks(items, 100):  # MLflow's per-request limit
        mlf.log_batch(run_id, params=chunk)


def log_metrics(mlf: "MlflowClient", run_id: str, metrics: dict[str, float], step: int) -> None:
    for chunk in _chunks(metric_entities(metrics, step), 1000):
        mlf.log_batch(run_id, metrics=chunk)


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


# -- grid results -----------------------------------------------------------------------------------------
def cell_key(dataset: str, metric: str, layer: int, dim: int) -> str:
    """``<dataset>/<metric>/cell/L<ll>_D<dddd>``: zero-padded, so MLflow's columns sort L2 < L10 and D32 < D128; under
    ``cell/``, so the chart view puts the cells in their own section (it groups by the key up to its last ``/``)
    after the summaries' ``<dataset>/<metric>`` section. (Until 0.1.0: ``<dataset>/<metric>/L<l>_D<d>``.)"""
    return f"{dataset}/{metric}/cell/L{layer:02d}_D{dim:04d}"


def cell_metrics(grid: "GridResult") -> dict[str, float]:
    """Every cell under its :func:`cell_key`: with ``evaluate.grid.summarize(grid, flat=True)``, the MLflow columns to
    compare trials on."""
    return {cell_key(r.dataset, r.metric, r.layer, r.dim): r.value for r in grid.rows}


@dataclass(frozen=True)
class Upload:
    """One thing for a run's artifact store: a file (into ``folder``) or an image (``key``, ``step``) for the chart view."""

    path: Path
    folder: str | None = None
    key: str | None = None
    step: int = 0

    def send(self, mlf: "MlflowClient", run_id: str) -> None:
        if self.key is None:
            mlf.log_artifact(run_id, str(self.path), artifact_path=self.folder)  # the same path again: overwritten
        else:
            from PIL import Image

            with Image.open(self.path) as image:
                mlf.log_image(run_id, image.convert("RGB"), key=self.key, step=self.step, synchronous=True)


def grid_uploads(out_dir: Path, grid: "GridResult", step: int) -> list[Upload]:
    """What a trial uploads at every evaluation, so a trial stopped early has them too: the grid (``grid.csv``;
    ``grid.json``, an MLflow table of every evaluation so far), the resolved ``config.yaml``, one heatmap per
    dataset x metric under ``heatmaps/``, and each heatmap again as an image keyed ``heatmap/<dataset>/<metric>``
    at this step (the chart view's image grid, with a step slider). Files are staged in ``out_dir/.mlflow``."""
    from .evaluate.plots import heatmap, heatmap_name

    out_dir = Path(out_dir)
    stage = out_dir / storage.STAGE
    (stage / "heatmaps").mkdir(parents=True, exist_ok=True)
    uploads = [Upload(grid.to_csv(stage / storage.GRID)), Upload(write_grid_table(stage / storage.GRID_TABLE, grid, step))]
    if (out_dir / storage.CONFIG).is_file():
        uploads.append(Upload(out_dir / storage.CONFIG))
    for ds in grid.datasets():
        for metric in grid.metrics(ds):
            png = heatmap(grid, ds, metric, stage / "heatmaps" / heatmap_name(ds, metric),
                          title=f"{ds} {metric} (step {step})")
            image = stage / "images" / f"{png.stem}_step{step:06d}.png"  # its own file: the next step overwrites png
            image.parent.mkdir(exist_ok=True)
            image.write_bytes(png.read_bytes())
            uploads += [Upload(png, "heatmaps"), Upload(image, key=Key.heatmap(ds, metric), step=step)]
    return uploads


TABLE = {"path": storage.GRID_TABLE, "type": "table"}  # the ``mlflow.loggedArtifacts`` entry that makes it a table


def write_grid_table(path: Path, grid: "GridResult", step: int) -> Path:
    """``path`` as an MLflow table (pandas "split" JSON, what ``log_table`` writes) holding every evaluation so far:
    this step's rows replace an earlier copy of the same step (a retried trial), other steps are kept."""
    import pandas as pd

    frame = grid.as_frame().assign(step=int(step))
    if path.is_file():
        old = pd.read_json(path, orient="split")
        frame = pd.concat([old[old["step"] != int(step)], frame], ignore_index=True)
    frame.to_json(path, orient="split", index=False)
    return path


def table_tag(*paths: str) -> dict[str, str]:
    """The tag that lists ``paths`` as tables in the MLflow UI (``log_table`` sets it; our tables are overwritten
    in place, which ``log_table``, an append, cannot do)."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    return {MLFLOW_LOGGED_ARTIFACTS: json.dumps([{"path": p, "type": "table"} for p in paths])}


# -- an unreachable tracking server -----------------------------------------------------------------------
WAIT_ENV = "M2D_TRACKING_WAIT_S"


def wait_seconds() -> float:
    """How long a trial waits for an unreachable tracking server where it cannot go on without it (its run at
    the start, its last metrics and artifacts at the end): ``$M2D_TRACKING_WAIT_S``, default 300."""
    return float(os.environ.get(WAIT_ENV) or 300)


def transient(err: BaseException) -> bool:
    """Errors a later retry can cure (no connection, timeouts, HTTP 5xx), not rejected requests (HTTP 4xx)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):  # "API request ... failed with exception ..." is INTERNAL_ERROR = 500
        return err.get_http_status_code() >= 500
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return err.response.status_code >= 500
    return isinstance(err, (requests.RequestException, ConnectionError, TimeoutError))


def brief(err: BaseException) -> str:
    """One short reason for a tracking error: MLflow's messages nest urllib3's whole retry story."""
    text = str(err)
    for needle, reason in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                           ("RemoteDisconnected", "connection closed by the server"),
                           ("Connection reset", "connection reset")):
        if needle in text:
            return reason
    return (text.splitlines() or [type(err).__name__])[0][:160]


def retry(fn, *args, what: str, wait_s: float | None = None, **kwargs):
    """``fn(*args, **kwargs)``, called again (backoff 1 s doubling to 30 s) while it fails with a :func:`transient`
    error, for up to ``wait_s`` (default :func:`wait_seconds`). One line when it first fails, one when it works."""
    import time

    wait = wait_seconds() if wait_s is None else wait_s
    deadline, delay, since = time.monotonic() + wait, 1.0, None
    while True:
        try:
            out = fn(*args, **kwargs)
        except Exception as err:
            if not transient(err) or time.monotonic() >= deadline:
                raise
            if since is None:
                since = time.monotonic()
                print(f"tracking: warning: {what}: server unreachable ({brief(err)}); retrying for up to {wait:g} s",
                      flush=True)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 30.0)
            continue
        if since is not None:
            print(f"tracking: {what}: server reachable again after {time.monotonic() - since:.0f} s", flush=True)
        return out


def metric_entities(metrics: dict[str, float], step: int) -> list:
    """MLflow ``Metric`` objects stamped now. Sending the same objects again is harmless on SQL stores (an exact
    key/step/timestamp/value duplicate is skipped), so a batch whose answer was lost can be re-sent."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(mlflow_key(k), float(v), now, int(step)) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


def mlflow_key(name: str) -> str:
    """MLflow metric names allow no ``@``: ``scifact/ndcg@10/full`` is logged as ``scifact/ndcg_at_10/full`` (Tune and
    the grid files keep the metric's own name)."""
    return name.replace("@", "_at_")
