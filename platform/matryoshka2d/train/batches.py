"""What a training run reads and in which order: the training columns (capped, hard negatives mined when asked) and
deterministic, length-bucketed batches per epoch."""

from __future__ import annotations

import random

from ..config import Config
from ..data.sources import TrainData, load_training, training_source
from ..encoder import Encoder
from ..errors import M2DError


def load_train_data(cfg: Config) -> TrainData:
    """The training columns (with mined hard negatives when ``data.hard_negatives``), capped, checked against the batch."""
    if cfg.data.hard_negatives:  # (query, positive, mined negatives...): mined once, cached
        from .mining import ensure_mined, load_mined

        out = TrainData(load_mined(ensure_mined(cfg, show_progress=False)))
    else:
        out = load_training(cfg)
    out = out.head(cfg.data.max_train_examples)
    if len(out) < cfg.train.batch_size:
        raise M2DError(f"train.batch_size: {cfg.train.batch_size} exceeds the {len(out)} training examples")
    return out


def column_roles(cfg: Config, columns: int) -> list[str | None]:
    """Each column's prompt role: retrieval training (BEIR qrels, mined negatives) has queries then documents, as
    retrieval evaluation encodes them; any other set (NLI triplets, scored pairs) takes the default prompt."""
    if training_source(cfg)[0] == "retrieval":
        return ["query"] + ["document"] * (columns - 1)
    return [None] * columns


def make_batches(lengths: list, batch_size: int, seed: int, epoch: int, bucketing: bool = True,
                 bucket_batches: int = 64) -> list[list[int]]:
    """Deterministic batches for one epoch (full batches only, MNRL needs equal sizes).

    With bucketing, a random permutation is cut into buckets of ``bucket_batches`` batches, each bucket is
    sorted by length (any sortable key, e.g. (anchor tokens, other tokens)), cut into batches, and the batch
    order is shuffled: little padding, random order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if bucketing:
        size = batch_size * bucket_batches
        order = [i for s in range(0, len(order), size) for i in sorted(order[s:s + size], key=lengths.__getitem__)]
    batches = [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
    if bucketing:
        rng.shuffle(batches)
    return batches


def token_lengths(encoder: Encoder, data: TrainData) -> list[tuple[int, int]]:
    """Sort keys (first column's tokens, the other columns' tokens), truncated as the encoder truncates: anchors
    match exactly within a batch, the shorter columns roughly; ``train.column_chunks`` removes most of the rest."""
    per_column = [encoder.token_ids(col) for col in data.columns]  # a prompt adds the same tokens to a whole column
    return [(len(per_column[0][i]), sum(len(c[i]) for c in per_column[1:])) for i in range(len(data))]


