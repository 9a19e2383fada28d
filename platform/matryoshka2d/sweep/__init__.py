"""Sweeps: a search over config fields, one Ray Tune trial per point, every trial an MLflow child run.

=========  ===================================================================================================
space      the search space file: dotted config keys -> domains, checked against the config (no Ray)
trial      one trial: its setup and resources, the Tune trainable, the Ray Train (DDP) workers
reporter   what a trial reports: MLflow from rank 0 through an outbox that outlives a server outage, Tune the rest
tuner      Optuna searchers, ASHA, a study's plain grid, restoring a killed sweep
runs       the MLflow parent run and its children, kept true to Tune's view; the parent's summary
driver     the command line (``m2d sweep --space weighting``): preflight checks, then Ray, runs and the Tuner
=========  ===================================================================================================

Imports point one way: driver -> tuner -> trial -> reporter, space; nothing here is imported by the core
(``train``, ``evaluate``, ``losses``, ``data``), which knows nothing of Ray or MLflow.
"""

from .driver import main

__all__ = ["main"]
