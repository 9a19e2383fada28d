"""The Tune side of a sweep: Optuna searchers, the ASHA scheduler, a study's plain grid, restoring a killed sweep."""

from __future__ import annotations

import os

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from .runs import RunCloser
from .trial import TrialSetup, trainable


def tune_environment() -> None:
    """Before the driver starts Tune: the new console output, and loss-only reports (between evaluations) carry no
    objective, which ASHA skips and Tune must not reject."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


class GridOnlyOptuna(OptunaSearch):
    """OptunaSearch that ignores the loss-only reports between evaluations (it indexes every result by the
    metric); the objective arrives with each intermediate grid and with the final one."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)


def search_tuner(setup: TrialSetup, objectives: list[tuple[str, str]], num_samples: int, seed: int,
                 scheduler: str, concurrency: int, storage_path: str, run_name: str, max_steps: int,
                 eval_every: int) -> tune.Tuner:
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
    return _tuner(setup, storage_path, run_name,
                  tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=num_samples,
                                  max_concurrent_trials=concurrency, metric=metric, mode=mode))


def grid_tuner(setup: TrialSetup, concurrency: int, storage_path: str, run_name: str) -> tune.Tuner:
    """Every point of the space's grid once (a reproduction study's rows x seeds), first come first served."""
    return _tuner(setup, storage_path, run_name, tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency))


def _tuner(setup: TrialSetup, storage_path: str, run_name: str, tune_config: tune.TuneConfig) -> tune.Tuner:
    # a finished trial's process runs the next trial: torch, transformers and the data are imported once, not per
    # trial (a smoke trial is mostly that start-up); a trial keeps no state in its process (MLflow by client)
    tune_config.reuse_actors = True
    return tune.Tuner(
        trainable(setup), param_space=setup.space.tune_space(), tune_config=tune_config,
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[RunCloser(setup.tracking_uri, setup.experiment_id, setup.parent_run_id, setup.run_dir)]))


def restore_tuner(run_dir: str, setup: TrialSetup) -> tune.Tuner:
    return tune.Tuner.restore(run_dir, trainable=trainable(setup), resume_unfinished=True, resume_errored=True,
                              restart_errored=False)
