"""Checks that cost milliseconds, run before a model's weights are loaded, Ray starts or anything is written.

The model is known from its ``config.json`` alone (blocks L, hidden size H, position limit), the data from
which files exist; what the trainer would otherwise reject at step 0, or a trial an hour into a sweep,
fails here in one line naming the field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .config import Config
from .errors import M2DError


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    max_positions: int | None  # None: the config names no limit


@functools.lru_cache(maxsize=8)
def model_shape(name: str) -> ModelShape:
    """Blocks, hidden size and position limit from the model's config.json, without loading weights."""
    from transformers import AutoConfig

    from .encoder import resolve_model_path

    path = resolve_model_path(name)
    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise M2DError(f"model: cannot read the config of {name!r} ({str(err).strip().splitlines()[0]})") from None
    limit = getattr(conf, "max_position_embeddings", None)
    return ModelShape(int(conf.num_hidden_layers), int(conf.hidden_size), int(limit) if limit else None)


def check_max_length(max_length: int | None, shape: ModelShape, field: str) -> None:
    if max_length is not None and shape.max_positions and max_length > shape.max_positions:
        raise M2DError(f"{field}: {max_length} exceeds the model's position limit of {shape.max_positions} tokens")


def check_for_model(cfg: Config) -> Config:
    """Method, evaluated cells and max length against the model (from its config.json alone)."""
    from .cells import parse_dims, parse_layers

    shape = model_shape(cfg.model.name)
    L, H = shape.num_layers, shape.hidden_size
    resolved = cfg.method.resolve(L, H)
    if cfg.method.truncate_model:
        layers = {layer for layer, _ in resolved.pairs}
        if len(layers) != 1:
            raise M2DError("method.truncate_model: needs pairs on one layer (a separately trained sub-model)")
        L = layers.pop()
        cfg.method.resolve(L, H)
    parse_layers(cfg.eval.layers, L, "eval.layers")
    parse_dims(cfg.eval.dims, H, "eval.dims")
    check_max_length(cfg.model.max_length, shape, "model.max_length")
    return cfg


def check_data(cfg: Config) -> None:
    """The data dir, the training set's files and every evaluation set's files exist (contents are the
    loaders' business, line by line)."""
    from .data import check_files, data_dir, expand_eval_names, train_source

    data_dir(cfg.data.data_dir)
    kind, name, split = train_source(cfg.method.task_loss, cfg.data.train, cfg.data.train_split, cfg.data.data_dir)
    if cfg.data.hard_negatives and kind != "retrieval":
        raise M2DError(f"data.hard_negatives: mined from a retrieval training set (BEIR qrels, e.g. scifact) with task "
                       f"loss mnrl or ce; {cfg.data.train!r} with {cfg.method.task_loss!r} reads {kind}")
    check_files("data.train", name, split, cfg.data.data_dir)
    for ds in expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)[0]:
        check_files("eval.datasets", ds, cfg.eval.split, cfg.data.data_dir)


def check_run(cfg: Config) -> Config:
    """Everything cheap about one training run: model fit, then data presence."""
    check_for_model(cfg)
    check_data(cfg)
    return cfg
