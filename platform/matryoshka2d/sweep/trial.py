"""One trial: its setup, the resources it asks for, the Tune trainable and the Ray Train workers.

Shape (Ray 2.60, Train V2):

- the Tune trainable is a plain *function* (:func:`run_trial`). With ``workers > 1`` (or ``backend="torch"``)
  it builds a ``TorchTrainer`` whose workers run :func:`train_worker` (DDP via ``prepare_model``, gloo on
  CPU / nccl on GPU) and forward reports to Tune with ``TuneReportCallback``; a Trainer handed to ``Tuner``
  directly fails under Train V2. With one worker it runs the loop in the trainable itself: no worker group
  to start (see ``bench/sweep_overhead.py`` for the measured difference).
- Checkpoints go through ``ray.train.report`` / ``ray.tune.report``; a worker that dies is retried from the
  latest one (Train ``FailureConfig`` for worker groups, Tune ``FailureConfig`` for in-process trials).
  Train V2 finds its own run snapshot again after a restored sweep because the trainer's
  ``RunConfig(name, storage_path)`` is derived from the trial id.
- Rank 0 logs to the trial's MLflow child run (:class:`.reporter.Reporter`); Tune only sees the summary
  numbers it schedules on. All the maths stays in ``train``/``evaluate``.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from .. import storage, tracking
from ..config import Config, build_config, compose
from ..errors import M2DError
from ..tracking import Tag
from . import runs
from .reporter import Reporter, WorkerSetup
from .space import ROW, SearchSpace

DRIVER_CPU = 0.01  # a Tune trial driver must hold > 0 CPU; the TorchTrainer's workers get the rest
BACKENDS = ("auto", "inprocess", "torch")


@dataclass
class TrialSetup:
    """Everything a trial needs besides its sampled params (sent once per trial via ``tune.with_parameters``)."""

    preset: str
    base: dict  # nested overrides on the preset: smoke settings, --set, data dir
    space: SearchSpace
    tracking_uri: str
    experiment_id: str = ""
    parent_run_id: str = ""
    run_dir: str = ""  # the Tune experiment folder; trial outputs go to <run_dir>/trials/<trial_id>
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_trial: float = 0.0
    backend: str = "inprocess"  # "inprocess" | "torch"
    max_failures: int = 2
    tags: dict[str, str] = field(default_factory=dict)  # git commit, data checksums, sampler seed
    rows: dict[str, dict] = field(default_factory=dict)  # study rows: label -> {"preset", "overrides"}

    def config(self, sampled: dict[str, Any]) -> Config:
        """The sweep's shared layers, or the study row's (when the grid has rows), then the sampled point."""
        row = self.rows[sampled[ROW]] if ROW in sampled else {"preset": self.preset, "overrides": self.base}
        return compose(row["preset"], composed=row["overrides"], point=self.space.overrides(sampled))


# -- resources --------------------------------------------------------------------------------------------
def choose_backend(workers: int, requested: str = "auto") -> str:
    """``auto``: in-process for one worker (no worker group to start; see bench/sweep_overhead.py), else torch."""
    if requested not in BACKENDS:
        raise M2DError(f"--backend: unknown {requested!r}; allowed {', '.join(BACKENDS)}")
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


# -- the Tune trainable -----------------------------------------------------------------------------------
def trainable(setup: TrialSetup):
    """:func:`run_trial` with the setup bound and the trial's resources attached, for ``Tuner`` and its restore."""
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), trial_resources(setup))


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
        runs.open_child, mlf, setup.experiment_id, setup.parent_run_id, trial_id, run_name[:250],
        params={**tracking.flat_params(cfg.model_dump(mode="json")), **{f"sweep.{k}": v for k, v in labels.items()},
                "sweep.backend": setup.backend, "sweep.workers": str(setup.workers)},
        tags={**setup.tags, **tracking.table_tag(storage.GRID_TABLE), Tag.SWEEP: Path(setup.run_dir).name,
              Tag.METHOD: cfg.method.name, Tag.TRAIN_SEED: str(cfg.train.seed)}, what=f"trial {trial_id}: MLflow run")
    out_dir = Path(setup.run_dir) / storage.TRIALS / trial_id
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / storage.PARAMS).write_text(json.dumps(params))  # the row / sampled labels, for later analysis
    worker = WorkerSetup(tracking_uri=setup.tracking_uri, run_id=run_id, out_dir=str(out_dir),
                         world_size=setup.workers)
    status = "FAILED"
    try:
        if setup.backend == "inprocess":
            _fit_in_process(cfg, setup, worker)
        else:
            _fit_torch(cfg, setup, worker, trial_id)
        status = "FINISHED"
    finally:
        timing = out_dir / storage.TIMING
        loop = json.loads(timing.read_text()).get("loop_s") if timing.is_file() else None
        trial_s = time.perf_counter() - started
        if loop is not None:
            timing.write_text(json.dumps({"loop_s": loop, "trial_s": trial_s}))
            timings = {tracking.Key.TRIAL_S: trial_s, tracking.Key.OVERHEAD_S: trial_s - loop}
            tracking.retry(tracking.log_metrics, mlf, run_id, timings, 0, what=f"trial {trial_id}: timing")
        if status == "FINISHED":
            runs.finish_child(mlf, run_id, trial_id)


def _fit_in_process(cfg: Config, setup: TrialSetup, worker: WorkerSetup) -> None:
    from ..train import Hooks, train
    from ..train.checkpoints import latest_checkpoint

    def send(metrics: dict, checkpoint: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)

    reporter = Reporter(0, worker, send)
    ckpt = tune.get_checkpoint()
    with (ckpt.as_directory() if ckpt else nullcontext(None)) as tune_dir:
        # Tune's checkpoint, else the trial folder's own latest (one process: always consistent)
        resume = Path(tune_dir) if tune_dir else latest_checkpoint(Path(worker.out_dir) / storage.CHECKPOINTS)
        reporter.note_resume(resume, "tune" if tune_dir else "local")
        device = "cuda" if setup.gpus_per_trial else "cpu"
        train(cfg, worker.out_dir, Hooks(report=reporter, resume_from=resume, device=device, show_progress=False))


def _fit_torch(cfg: Config, setup: TrialSetup, worker: WorkerSetup, trial_id: str) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = bool(setup.gpus_per_trial)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "worker": asdict(worker)},
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

    from ..train import Hooks, train

    _quiet()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    worker = WorkerSetup(**{**loop_config["worker"], "world_size": world})
    cfg = build_config(loop_config["config"])

    def wrap(model):
        # BertModel's pooler is computed but never in the loss: DDP must tolerate unused parameters. Buffers
        # (position ids) are constants, and broadcasting them would be a collective that rank 0's mid-training
        # evaluation (a forward pass on rank 0 only) can never match.
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True, "forward_sync_buffers": False})

    def send(metrics: dict, checkpoint: Path | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)

    reporter = Reporter(rank, worker, send)
    ckpt = ray.train.get_checkpoint()
    with (ckpt.as_directory() if ckpt else nullcontext(None)) as resume:
        reporter.note_resume(Path(resume) if resume else None, "ray")
        # Only Ray's checkpoint: it is the one every rank gets, wherever the restarted workers land.
        train(cfg, worker.out_dir, Hooks(rank=rank, world_size=world, wrap_model=wrap, report=reporter,
                                         resume_from=Path(resume) if resume else None, local_resume=False,
                                         device=str(ray.train.torch.get_device()), show_progress=False))
