"""Ray Train / Tune glue around :func:`matryoshka2d.train.train`: search spaces, trials, workers, Tuner.

Shape of a sweep (Ray 2.60, Train V2):

- the Tune trainable is a plain *function* (:func:`run_trial`). With ``workers > 1`` (or ``backend="torch"``)
  it builds a ``TorchTrainer`` whose workers run :func:`train_worker` (DDP via ``prepare_model``, gloo on
  CPU / nccl on GPU) and forward reports to Tune with ``TuneReportCallback``; a Trainer handed to ``Tuner``
  directly fails under Train V2. With one worker it runs the loop in the trainable itself: no worker group
  to start (see ``bench/sweep_overhead.py`` for the measured difference).
- Checkpoints go through ``ray.train.report`` / ``ray.tune.report``; a worker that dies is retried from the
  latest one (Train ``FailureConfig`` for worker groups, Tune ``FailureConfig`` for in-process trials), and
  a killed sweep is resumed with ``Tuner.restore``: Train V2 finds its own run snapshot again because the
  trainer's ``RunConfig(name, storage_path)`` is derived from the trial id.
- Rank 0 logs to the trial's MLflow child run (:mod:`matryoshka2d.tracking`); Tune only sees the summary
  numbers it schedules on.

All the maths stays in ``train``/``evaluate``; this module only wires processes together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from . import tracking
from .config import Config, build_config, deep_merge, load_config, numeric_kind
from .errors import M2DError

DRIVER_CPU = 0.01  # a Tune trial driver must hold > 0 CPU; the TorchTrainer's workers get the rest
SCALARS = (str, int, float, bool, type(None))
KINDS = ("choice", "uniform", "loguniform", "int")
ROW = "row"  # a study's grid key: its label picks one row (preset + overrides) of TrialSetup.rows


# -- search spaces ----------------------------------------------------------------------------------------
@dataclass
class Param:
    """One swept config key. ``labels`` are what Optuna sees; ``values`` maps a label to its config value."""

    key: str
    kind: str
    labels: list[Any] = field(default_factory=list)  # choice labels (scalars)
    values: dict[Any, Any] = field(default_factory=dict)  # label -> value, only where they differ
    low: float = 0.0
    high: float = 0.0

    def domain(self):
        if self.kind == "grid":  # every label once (a reproduction study's rows and seeds)
            return tune.grid_search(self.labels)
        if self.kind == "choice":
            return tune.choice(self.labels)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(int(self.low), int(self.high) + 1)  # YAML bounds are inclusive

    def value(self, label: Any) -> Any:
        return self.values.get(label, label)


@dataclass
class SearchSpace:
    """Dotted config keys -> domains, read from ``experiments/spaces/*.yaml``."""

    path: str
    params: list[Param]
    first: list[dict[str, Any]] = field(default_factory=list)  # trials Optuna runs before sampling (labels)

    def tune_space(self) -> dict[str, Any]:
        return {p.key: p.domain() for p in self.params}

    def overrides(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Sampled labels -> one nested override dict; shallow keys first, so ``method.kl.weight`` beats ``method.kl``."""
        out: dict[str, Any] = {}
        for p in sorted(self.params, key=lambda p: p.key.count(".")):
            if p.key in sampled and p.key != ROW:
                out = deep_merge(out, nest({p.key: p.value(sampled[p.key])}))
        return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"method.kl.weight": 1}`` -> ``{"method": {"kl": {"weight": 1}}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def load_space(path: str | Path, validate: Callable[[dict], None] | None = None) -> SearchSpace:
    """Parse and check a space file; every problem is one ``space <file>: ...`` line.

    ``validate(overrides)`` is called with each choice (and each range end) so that an unknown key or a
    value the config rejects fails here, before Ray starts, not in trial 7 an hour later.
    """
    path = Path(path)
    where = f"space {path}"
    if not path.is_file():
        raise M2DError(f"{where}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise M2DError(f"{where}{f' line {mark.line + 1}' if mark else ''}: invalid YAML "
                       f"({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict) or not data:
        raise M2DError(f"{where}: expected a mapping of dotted config keys to {{choice|uniform|loguniform|int: ...}}")
    first = data.pop("evaluate_first", None) or []
    params = [_param(where, str(key), spec) for key, spec in data.items()]
    first = _first_points(where, first, params)
    if validate is not None:
        for p in params:
            candidates = [(label, p.value(label)) for label in p.labels] if p.kind == "choice" else \
                [(x, int(x) if p.kind == "int" else x) for x in (p.low, p.high)]
            for label, value in candidates:
                try:
                    validate(nest({p.key: value}))
                except M2DError as err:
                    raise M2DError(f"{where}: {p.key}={_short(label)}: {err}") from None
    return SearchSpace(str(path), params, first)


def _first_points(where: str, points: Any, params: list[Param]) -> list[dict[str, Any]]:
    """``evaluate_first: [{key: label, ...}, ...]``: every key a swept one, every label in its domain; keys left
    out get the domain's first label / lower bound (Optuna needs complete points)."""
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise M2DError(f"{where}: evaluate_first: expected a list of {{key: label}} mappings")
    by_key = {p.key: p for p in params}
    out = []
    for point in points:
        full = {}
        for key, param in by_key.items():
            value = point.get(key, param.labels[0] if param.kind == "choice" else param.low)
            ok = value in param.labels if param.kind == "choice" else \
                isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high
            if not ok:
                allowed = ", ".join(map(str, param.labels)) if param.kind == "choice" else f"{param.low}..{param.high}"
                raise M2DError(f"{where}: evaluate_first: {key}={_short(value)} is not in its domain ({allowed})")
            full[key] = value
        unknown = set(point) - set(by_key)
        if unknown:
            raise M2DError(f"{where}: evaluate_first: {', '.join(sorted(unknown))} is not a swept key")
        out.append(full)
    return out


def _param(where: str, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise M2DError(f"{where}: {key}: expected exactly one of {', '.join(KINDS)}, e.g. {{choice: [a, b]}}, "
                       f"got {_short(spec)}")
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if isinstance(arg, dict) and arg:  # {label: value}: readable labels for lists / bundles
            labels = [str(label) for label in arg]
            return Param(key, kind, labels, dict(zip(labels, arg.values())))
        if not isinstance(arg, list) or not arg:
            raise M2DError(f"{where}: {key}: choice needs a non-empty list or a {{label: value}} mapping")
        labels, values = [], {}
        for item in arg:
            label = item if isinstance(item, SCALARS) else json.dumps(item, separators=(",", ":"))
            if not isinstance(item, SCALARS):
                values[label] = item
            labels.append(label)
        if len({json.dumps(x, sort_keys=True, default=str) for x in labels}) != len(labels):
            raise M2DError(f"{where}: {key}: choice has duplicate values")
        return Param(key, kind, labels, values)
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             for x in arg)):
        raise M2DError(f"{where}: {key}: {kind} needs [low, high] numbers, got {_short(arg)}")
    low, high = arg
    field = numeric_kind(key)  # None: unknown key, reported by validation with the field's name
    if kind in ("uniform", "loguniform") and field == "int":
        raise M2DError(f"{where}: {key}: {kind} samples floats but {key} is an integer field; use int: [low, high]")
    if field == "other":
        raise M2DError(f"{where}: {key}: {kind} samples numbers but {key} is not a numeric field; use choice: [...]")
    if kind == "int" and not all(isinstance(x, int) for x in arg):
        raise M2DError(f"{where}: {key}: int needs integer bounds, got {_short(arg)}")
    if not low < high:
        raise M2DError(f"{where}: {key}: {kind} needs low < high, got {_short(arg)}")
    if kind == "loguniform" and low <= 0:
        raise M2DError(f"{where}: {key}: loguniform needs low > 0, got {_short(arg)}")
    return Param(key, kind, low=low, high=high)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- trial setup ------------------------------------------------------------------------------------------
@dataclass
class TrialSetup:
    """Everything a trial needs besides its sampled params (sent once per trial via ``tune.with_parameters``)."""

    preset: str
    base: dict  # nested overrides on the preset: smoke settings, --set, data dir
    space: SearchSpace
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_dir: str  # the Tune experiment folder; trial outputs go to <run_dir>/trials/<trial_id>
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_trial: float = 0.0
    backend: str = "inprocess"  # "inprocess" | "torch"
    max_failures: int = 2
    tags: dict[str, str] = field(default_factory=dict)  # git commit, data checksums, sampler seed
    fault_at_step: int = 0  # test hook: the last rank dies once at this step (retry-from-checkpoint test)
    rows: dict[str, dict] = field(default_factory=dict)  # study rows: label -> {"preset", "overrides"}

    def config(self, sampled: dict[str, Any]) -> Config:
        """Preset, base, the study row's overrides (when the grid has rows), then the sampled fields."""
        row = self.rows[sampled[ROW]] if ROW in sampled else {"preset": self.preset, "overrides": {}}
        return load_config(row["preset"], deep_merge(deep_merge(self.base, row["overrides"]),
                                                     self.space.overrides(sampled)))


def choose_backend(workers: int, requested: str = "auto") -> str:
    """``auto``: in-process for one worker (no worker group to start; see bench/sweep_overhead.py), else torch."""
    if requested not in ("auto", "inprocess", "torch"):
        raise M2DError(f"--backend: unknown {requested!r}; allowed auto, inprocess, torch")
    if requested == "inprocess" and workers != 1:
        raise M2DError("--backend inprocess: needs --workers-per-trial 1")
    return requested if requested != "auto" else ("inprocess" if workers == 1 else "torch")


def trial_resources(setup: TrialSetup) -> dict[str, float]:
    if setup.backend == "inprocess":
        return {"cpu": setup.cpus_per_worker, "gpu": setup.gpus_per_trial}
    return {"cpu": DRIVER_CPU}


def worker_resources(setup: TrialSetup) -> dict[str, float]:
    """Per-worker CPUs minus the trial driver's share, so a trial needs exactly workers x cpus (rounded down to
    Ray's 1e-4 resource granularity): otherwise 2 workers x 1 CPU + 0.01 never fit on a 2-CPU node."""
    cpu = math.floor((setup.workers * setup.cpus_per_worker - DRIVER_CPU) / setup.workers * 1e4) / 1e4
    res = {"CPU": cpu}
    if setup.gpus_per_trial:
        res["GPU"] = setup.gpus_per_trial / setup.workers
    return res


def trial_bundles(setup: TrialSetup) -> list[dict[str, float]]:
    """What one trial asks Ray for: the trial itself, plus one bundle per worker with a worker group."""
    own = {k.upper(): v for k, v in trial_resources(setup).items() if v}
    return [own] + ([worker_resources(setup)] * setup.workers if setup.backend != "inprocess" else [])


def unschedulable(nodes: list[dict[str, float]], bundles: list[dict[str, float]]) -> str | None:
    """None if the bundles fit on these nodes at once (first fit, largest bundle first), else what is missing,
    e.g. ``"a trial needs 4 CPU, 0 GPU (5 bundle(s), each on one node); the cluster has 2 CPU, 0 GPU on 1 node(s),
    the largest 2 CPU, 0 GPU"``."""
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        node = next((n for n in free if all(n.get(k, 0) + 1e-9 >= v for k, v in bundle.items())), None)
        if node is None:
            need = {k: sum(b.get(k, 0) for b in bundles) for k in ("CPU", "GPU")}
            have = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
            big = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            return (f"a trial needs {need['CPU']:g} CPU, {need['GPU']:g} GPU ({len(bundles)} bundle(s), each on one "
                    f"node); the cluster has {have['CPU']:g} CPU, {have['GPU']:g} GPU on {len(nodes)} node(s), "
                    f"the largest {big.get('CPU', 0):g} CPU, {big.get('GPU', 0):g} GPU")
        for k, v in bundle.items():
            node[k] = node.get(k, 0) - v
    return None


def max_concurrent(cluster: dict[str, float], workers: int, cpus_per_worker: float, gpus_per_trial: float) -> int:
    """How many trials fit at once: ``ray.cluster_resources()`` CPU (and GPU) over one trial's need, at least 1
    (an autoscaling cluster may report 0 before it scales up)."""
    fits = [int(cluster.get("CPU", 0) // (workers * cpus_per_worker))]
    if gpus_per_trial:
        fits.append(int(cluster.get("GPU", 0) // gpus_per_trial))
    return max(1, min(fits))


# -- reporting (runs in the trial or in each Train worker) ------------------------------------------------
class Reporter:
    """``Hooks.report``: MLflow from rank 0, then Tune/Train gets flat summary numbers (and the checkpoint).

    Every rank calls ``send`` for every report, since Ray Train's report is a barrier across workers.

    Rank 0's MLflow writes survive a tracking server outage: each report's metrics (stamped when reported) and
    the final artifacts go to an outbox, sent oldest first. While the server is unreachable, a report only adds
    to it (one warning line; a new attempt at most every 1-30 s, backing off) and training goes on; the final
    report waits for the server up to ``$M2D_TRACKING_WAIT_S`` (default 300 s), then fails the trial. A batch
    whose answer was lost is re-sent with its original timestamps, which SQL stores skip as duplicates.
    """

    def __init__(self, rank: int, setup: dict, send: Callable[[dict, Path | None], None]):
        self.rank, self.setup, self.send = rank, setup, send
        self.started = time.perf_counter()
        self._mlf = None
        self._metrics: list = []  # mlflow Metric objects not logged yet, oldest first
        self._files: list[tracking.Upload] = []  # artifacts and images not uploaded yet, oldest first
        self._down_since: float | None = None  # first failure of the current outage
        self._retry_at, self._delay = 0.0, 1.0

    @property
    def mlf(self):
        if self._mlf is None:
            self._mlf = tracking.client(self.setup["tracking_uri"])
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # no line per HTTP retry
        return self._mlf

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        step = int(metrics["step"])
        self._maybe_fail(step)
        scalars = {k: v for k, v in metrics.items()
                   if k not in ("grid", "final", "step", "steps") and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        grid = metrics.get("grid")
        summaries = tracking.grid_summaries(grid) if grid is not None else {}
        final = bool(metrics.get("final"))
        if final:
            scalars["m2d/loop_s"] = time.perf_counter() - self.started
        if self.rank == 0:
            cells = tracking.cell_metrics(grid) if grid is not None else {}
            self._metrics += tracking.metric_entities({**scalars, **cells, **summaries}, step)
            out = Path(self.setup["out_dir"])
            if grid is not None:  # every evaluation: a trial stopped early (ASHA) still has its latest grid
                new = tracking.grid_uploads(out, grid, step)
                # staged files are rewritten in place: a still pending upload of an older copy is dropped
                files = {(u.path, u.folder) for u in new if u.key is None}
                self._files = [u for u in self._files if u.key is not None or (u.path, u.folder) not in files] + new
            self.flush(wait=final)
            if final and grid is not None:
                (out / "timing.json").write_text(json.dumps({"loop_s": scalars["m2d/loop_s"]}))
        self.send({"step": step, **scalars, **summaries, "final": final}, checkpoint)

    def flush(self, wait: bool = False) -> bool:
        """Send the outbox; True when it is empty. ``wait``: try at once, then again until the server answers or
        :func:`tracking.wait_seconds` have passed (then raise)."""
        deadline = time.monotonic() + tracking.wait_seconds()
        if wait:
            self._retry_at = 0.0
        while self._metrics or self._files:
            if time.monotonic() >= self._retry_at:
                try:
                    self._send_outbox()
                    continue
                except Exception as err:
                    if not tracking.transient(err):
                        raise
                    self._failed(err)
            if not wait:
                return False
            self._retry_at = min(self._retry_at, deadline)  # one last try at the deadline
            if time.monotonic() >= deadline:
                raise M2DError(f"tracking server {self.setup['tracking_uri']} unreachable for "
                               f"{tracking.wait_seconds():g} s (${tracking.WAIT_ENV}): {len(self._metrics)} metric "
                               f"values and {len(self._files)} artifacts of run {self.setup['run_id']} not logged")
            time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
        if self._down_since is not None:
            print(f"tracking: MLflow reachable again after {time.monotonic() - self._down_since:.0f} s; "
                  f"buffered metrics of run {self.setup['run_id']} sent", flush=True)
            self._down_since, self._retry_at, self._delay = None, 0.0, 1.0
        return True

    def _send_outbox(self) -> None:
        run_id = self.setup["run_id"]
        while self._metrics:
            self.mlf.log_batch(run_id, metrics=self._metrics[:1000])  # MLflow's per-request limit
            del self._metrics[:1000]
        while self._files:
            self._files[0].send(self.mlf, run_id)
            del self._files[0]

    def _failed(self, err: Exception) -> None:
        if self._down_since is None:
            self._down_since, self._delay = time.monotonic(), 1.0
            first = self._metrics[0].step if self._metrics else "final"
            print(f"tracking: warning: MLflow unreachable ({tracking.brief(err)}); run {self.setup['run_id']} keeps "
                  f"its metrics from step {first} on and re-sends them when it is back", flush=True)
        else:
            self._delay = min(self._delay * 2, 30.0)
        self._retry_at = time.monotonic() + self._delay

    def _maybe_fail(self, step: int) -> None:
        """Test hook: once per sweep, the last rank exits hard at its first report after ``fault_at_step``
        (mid-trial, a few seconds after the checkpoint there was reported, so Ray has registered it)."""
        fault = int(self.setup.get("fault_at_step") or 0)
        if fault and step > fault and self.rank == self.setup["world_size"] - 1:
            marker = Path(self.setup["fault_marker"])
            if not marker.exists():
                marker.write_text(f"{self.setup['run_id']} {step}")
                time.sleep(3)
                os._exit(1)

    def note_resume(self, checkpoint: Path | None, source: str) -> None:
        """Tag the run with the step a retried or resumed trial starts from (``m2d.resumed_from_step``)."""
        if checkpoint is not None and self.rank == 0:
            meta = Path(checkpoint) / "meta.json"
            step = json.loads(meta.read_text())["step"] if meta.is_file() else "?"
            for key, value in (("m2d.resumed_from_step", str(step)), ("m2d.resumed_from", source)):
                tracking.retry(self.mlf.set_tag, self.setup["run_id"], key, value, what=f"tag {key}")


# -- the Tune trainable -----------------------------------------------------------------------------------
def _quiet() -> None:
    """No weight-loading / shard-writing progress bars from every trial and worker in the driver's log."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def run_trial(params: dict, setup: TrialSetup) -> None:
    """One trial: its MLflow child run, then the loop in-process or on a TorchTrainer worker group."""
    started = time.perf_counter()
    _quiet()
    trial_id = tune.get_context().get_trial_id()
    cfg = setup.config(params)
    mlf = tracking.client(setup.tracking_uri)
    labels = {k: str(v) for k, v in params.items()}
    short = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in params.items()}
    run_name = f"{trial_id} " + " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in short.items())
    run_id = tracking.retry(  # a trial that starts while the server is down waits for it
        tracking.child_run, mlf, setup.experiment_id, setup.parent_run_id, trial_id, run_name[:250],
        params={**tracking.flat_params(cfg.model_dump(mode="json")), **{f"sweep.{k}": v for k, v in labels.items()},
                "sweep.backend": setup.backend, "sweep.workers": str(setup.workers)},
        tags={**setup.tags, **tracking.table_tag("grid.json"), tracking.SWEEP_TAG: Path(setup.run_dir).name,
              "m2d.method": cfg.method.name,
              "m2d.train_seed": str(cfg.train.seed)}, what=f"trial {trial_id}: MLflow run")
    out_dir = Path(setup.run_dir) / "trials" / trial_id
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "params.json").write_text(json.dumps(params))  # the row / sampled labels, for later analysis
    worker_setup = {"tracking_uri": setup.tracking_uri, "run_id": run_id, "out_dir": str(out_dir),
                    "fault_at_step": setup.fault_at_step, "fault_marker": str(Path(setup.run_dir) / ".fault-injected"),
                    "world_size": setup.workers}
    status = "FAILED"
    try:
        if setup.backend == "inprocess":
            _fit_in_process(cfg, setup, worker_setup)
        else:
            _fit_torch(cfg, setup, worker_setup, trial_id)
        status = "FINISHED"
    finally:
        timing = out_dir / "timing.json"
        loop = json.loads(timing.read_text()).get("loop_s") if timing.is_file() else None
        trial_s = time.perf_counter() - started
        if loop is not None:
            timing.write_text(json.dumps({"loop_s": loop, "trial_s": trial_s}))
            timings = {"m2d/trial_s": trial_s, "m2d/overhead_s": trial_s - loop}
            tracking.retry(tracking.log_metrics, mlf, run_id, timings, 0, what=f"trial {trial_id}: timing")
        if status == "FINISHED":  # failures are left to Tune's retry; the driver closes what stays failed
            tracking.retry(mlf.set_terminated, run_id, status=status, what=f"trial {trial_id}: close run")


def _fit_in_process(cfg: Config, setup: TrialSetup, worker_setup: dict) -> None:
    from .train import Hooks, latest_checkpoint, train

    def send(metrics: dict, checkpoint: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)

    reporter = Reporter(0, worker_setup, send)
    ckpt = tune.get_checkpoint()
    with (ckpt.as_directory() if ckpt else nullcontext(None)) as tune_dir:
        # Tune's checkpoint, else the trial folder's own latest (one process: always consistent)
        resume = Path(tune_dir) if tune_dir else latest_checkpoint(Path(worker_setup["out_dir"]) / "checkpoints")
        reporter.note_resume(resume, "tune" if tune_dir else "local")
        device = "cuda" if setup.gpus_per_trial else "cpu"
        train(cfg, worker_setup["out_dir"], Hooks(report=reporter, resume_from=resume, device=device,
                                                  show_progress=False))


def _fit_torch(cfg: Config, setup: TrialSetup, worker_setup: dict, trial_id: str) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = bool(setup.gpus_per_trial)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "setup": worker_setup},
        scaling_config=ScalingConfig(num_workers=setup.workers, use_gpu=use_gpu,
                                     resources_per_worker=worker_resources(setup)),
        # name = trial id: a restarted trial (resumed sweep) finds this run's checkpoint snapshot again
        run_config=RunConfig(name=trial_id, storage_path=str(Path(setup.run_dir) / "train"),
                             failure_config=FailureConfig(max_failures=setup.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             callbacks=[TuneReportCallback()]),
    )  # TorchConfig's default backend: nccl with GPUs, gloo on CPU
    trainer.fit()


def train_worker(loop_config: dict) -> None:
    """The Ray Train worker function: the unchanged loop with DDP wrapping and Ray reporting plugged in."""
    import ray.train
    import ray.train.torch

    from .train import Hooks, train

    _quiet()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup = {**loop_config["setup"], "world_size": world}
    cfg = build_config(loop_config["config"])

    def wrap(model):
        # BertModel's pooler is computed but never in the loss: DDP must tolerate unused parameters. Buffers
        # (position ids) are constants, and broadcasting them would be a collective that rank 0's mid-training
        # evaluation (a forward pass on rank 0 only) can never match.
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True, "forward_sync_buffers": False})

    def send(metrics: dict, checkpoint: Path | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)

    reporter = Reporter(rank, setup, send)
    ckpt = ray.train.get_checkpoint()
    with (ckpt.as_directory() if ckpt else nullcontext(None)) as resume:
        reporter.note_resume(Path(resume) if resume else None, "ray")
        # Only Ray's checkpoint: it is the one every rank gets, wherever the restarted workers land.
        train(cfg, setup["out_dir"], Hooks(rank=rank, world_size=world, wrap_model=wrap, report=reporter,
                                           resume_from=Path(resume) if resume else None, local_resume=False,
                                           device=str(ray.train.torch.get_device()), show_progress=False))


# -- the driver side --------------------------------------------------------------------------------------
def _trainable(setup: TrialSetup):
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), trial_resources(setup))


def build_tuner(setup: TrialSetup, objectives: list[tuple[str, str]], num_samples: int, seed: int,
                scheduler: str, concurrency: int, storage_path: str, run_name: str, max_steps: int,
                eval_every: int):
    """Optuna (single or multi-objective) + ASHA on the intermediate grid metric when single-objective."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    single = len(objectives) == 1
    first = setup.space.first or None  # evaluate_first: fixed trials before Optuna samples
    if single:
        searcher = GridOnlyOptuna(seed=seed, points_to_evaluate=first)
        metric, mode = objectives[0]
    else:  # Tune schedulers rank on one metric: a multi-objective study runs without early stopping
        searcher = GridOnlyOptuna(metric=[m for m, _ in objectives], mode=[d for _, d in objectives], seed=seed,
                                  points_to_evaluate=first)
        metric = mode = None
    if single and scheduler == "asha" and eval_every:
        sched = ASHAScheduler(time_attr="step", max_t=max_steps, grace_period=eval_every, reduction_factor=2)
    else:
        sched = FIFOScheduler()
    return tune.Tuner(
        _trainable(setup),
        param_space=setup.space.tune_space(),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=num_samples,
                                    max_concurrent_trials=concurrency, metric=metric, mode=mode),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[RunCloser(setup.tracking_uri, setup.experiment_id, setup.parent_run_id, setup.run_dir)]),
    )


def restore_tuner(run_dir: str, setup: TrialSetup):
    return tune.Tuner.restore(run_dir, trainable=_trainable(setup), resume_unfinished=True, resume_errored=True,
                              restart_errored=False)


class GridOnlyOptuna(OptunaSearch):
    """OptunaSearch that ignores the loss-only reports between evaluations (it indexes every result by the
    metric); the objective arrives with each intermediate grid and with the final one."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)


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
            run = tracking.find_child(mlf, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run is None or run.info.status != "RUNNING":
                return
            if status == "FINISHED" and not (trial.last_result or {}).get("final"):
                mlf.set_tag(run.info.run_id, "m2d.stopped_early", "true")
            mlf.set_terminated(run.info.run_id, status=status)
        except Exception as err:  # never take the sweep down over bookkeeping; the driver re-checks at the end
            print(f"sweep: warning: could not close the MLflow run of trial {trial.trial_id}: {err}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")
        # a finished trial never resumes: its local step checkpoints (hundreds of MB for MiniLM) are dead
        # weight; Ray keeps its own last copy (num_to_keep=1) until the run dir is deleted
        if self.run_dir:
            shutil.rmtree(Path(self.run_dir) / "trials" / trial.trial_id / "checkpoints", ignore_errors=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED")
