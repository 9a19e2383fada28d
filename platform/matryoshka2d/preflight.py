"""Checks that cost milliseconds, run before a model's weights are loaded, Ray starts or anything is written.

The model is known from its ``config.json`` alone (:func:`.resolve.resolve`), the data from which files exist;
what the trainer would otherwise reject at step 0, or a trial an hour into a sweep, fails here in one line
naming the field.
"""

from __future__ import annotations

from .config import Config
from .data.sources import check_present
from .resolve import ResolvedRun, resolve


def check_run(cfg: Config) -> ResolvedRun:
    """Everything cheap about one training run: model fit (:func:`.resolve.resolve`), then data presence."""
    run = resolve(cfg)
    check_present(cfg)  # data: the files exist
    return run
