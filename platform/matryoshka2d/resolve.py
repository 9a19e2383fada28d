"""One place that turns a config into a run for one model: :func:`resolve`, called once per run and handed down.

A config speaks the model-independent grammar of :mod:`.cells` (``"0..L-2"``, ``"min(128,H)"``); the model
is known from its ``config.json`` alone (blocks L, hidden size H, position limit), so a run is resolved, and
every field checked against the model, before any weights load (the folder itself is checked by
:func:`matryoshka2d.encoder.read_model` from its files' headers). :func:`check_run` adds
the data files: the preflight every command runs first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .cells import parse_dims, parse_layers
from .config import Config
from .errors import M2DError
from .methods import ResolvedMethod


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    max_positions: int | None  # None: the config names no limit


@functools.lru_cache(maxsize=8)
def model_shape(name: str) -> ModelShape:
    """Blocks, hidden size and position limit from the model's config.json, without loading weights: the model is read
    by :func:`matryoshka2d.encoder.read_model`, so a broken folder is refused here, the first thing a command does."""
    from .encoder import read_model

    conf = read_model(name).config
    limit = getattr(conf, "max_position_embeddings", None)
    return ModelShape(int(conf.num_hidden_layers), int(conf.hidden_size), int(limit) if limit else None)


def check_max_length(max_length: int | None, shape: ModelShape, field: str) -> None:
    if max_length is not None and shape.max_positions and max_length > shape.max_positions:
        raise M2DError(f"{field}: {max_length} exceeds the model's position limit of {shape.max_positions} tokens")


@dataclass(frozen=True)
class ResolvedRun:
    """A config with every layer and dim made concrete for one model.

    ``num_layers`` is the blocks the run trains: the model's, or the single pair's layer of a separately trained
    sub-model (``method.truncate_model``), whose encoder is cut to it before training.
    """

    config: Config
    shape: ModelShape
    num_layers: int
    method: ResolvedMethod
    eval_layers: list[int]
    eval_dims: list[int]

    @property
    def hidden_size(self) -> int:
        return self.shape.hidden_size

    @property
    def truncated(self) -> bool:
        return self.num_layers != self.shape.num_layers


def resolve(cfg: Config, shape: ModelShape | None = None) -> ResolvedRun:
    """Method, evaluated cells and max length against the model (its config.json unless ``shape`` is given)."""
    shape = shape or model_shape(cfg.model.name)
    L, H = shape.num_layers, shape.hidden_size
    method = cfg.method.resolve(L, H)
    if cfg.method.truncate_model:
        layers = {layer for layer, _ in method.pairs}
        if len(layers) != 1:
            raise M2DError("method.truncate_model: needs pairs on one layer (a separately trained sub-model)")
        L = layers.pop()
        method = cfg.method.resolve(L, H)
    eval_layers = parse_layers(cfg.eval.layers, L, "eval.layers")
    eval_dims = parse_dims(cfg.eval.dims, H, "eval.dims")
    check_max_length(cfg.model.max_length, shape, "model.max_length")
    return ResolvedRun(cfg, shape, L, method, eval_layers, eval_dims)


def check_run(cfg: Config) -> ResolvedRun:
    """Everything cheap about one training run, before its weights load, Ray starts or anything is written: the model
    fit (:func:`resolve`, from config.json alone), then data presence (which files exist). What the trainer would
    otherwise reject at step 0, or a trial an hour into a sweep, fails here in one line naming the field."""
    from .data.sources import check_present

    run = resolve(cfg)
    check_present(cfg)
    return run
