"""What one run reads: its training source, its evaluation sets, their files and checksums.

The only place that knows which data a config means: the task loss decides triplets vs scored pairs (so
``snli`` with CoSENT reads STS-B train), a BEIR name (``scifact``) means its training qrels. Preflight, the
trainer and run tracking all ask here. ``cfg`` is a :class:`matryoshka2d.config.Config`; only its ``data``,
``eval`` and ``method.task_loss`` fields are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import M2DError
from .registry import check_files, data_dir, expand_eval_names, file_checksums, load_train_source, train_source
from .types import Triplets

if TYPE_CHECKING:
    from ..config import Config


@dataclass
class TrainData:
    """Text columns (anchor, positive[, negative...]) or (sentence1, sentence2) with float labels."""

    columns: list[list[str]]
    labels: list[float] | None = None

    def __len__(self) -> int:
        return len(self.columns[0])

    def head(self, n: int | None) -> "TrainData":
        if not n:
            return self
        return TrainData([c[:n] for c in self.columns], self.labels[:n] if self.labels else None)


def training_source(cfg: "Config") -> tuple[str, str, str]:
    """(kind, dataset, split) the run trains on; kind is ``triplets``, ``pairs`` or ``retrieval``."""
    kind, name, split = train_source(cfg.method.task_loss, cfg.data.train, cfg.data.train_split, cfg.data.data_dir)
    if cfg.data.hard_negatives and kind != "retrieval":
        raise M2DError(f"data.hard_negatives: mined from a retrieval training set (BEIR qrels, e.g. scifact) with task "
                       f"loss mnrl or ce; {cfg.data.train!r} with {cfg.method.task_loss!r} reads {kind}")
    if cfg.data.hard_negatives and name.startswith("hf:"):
        raise M2DError(f"data.hard_negatives: mined from a BEIR folder or a named set (scifact); {name!r} trains with "
                       "in-batch negatives only (set data.hard_negatives=0)")
    return kind, name, split


def check_present(cfg: "Config") -> None:
    """The data dir, the training set's files and every evaluation set's files exist (contents are the loaders'
    business, line by line)."""
    data_dir(cfg.data.data_dir)
    _, name, split = training_source(cfg)
    check_files("data.train", name, split, cfg.data.data_dir)
    for ds in expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)[0]:
        check_files("eval.datasets", ds, cfg.eval.split, cfg.data.data_dir)


def checksums(cfg: "Config") -> dict[str, str]:
    """``{file: sha256[:16]}`` of the training and evaluation files the run reads; files that cannot be found are
    left out (the trainer reports those itself, with a better message)."""
    _, name, split = train_source(cfg.method.task_loss, cfg.data.train, cfg.data.train_split, cfg.data.data_dir)
    try:
        evaluated = expand_eval_names(cfg.eval.datasets, cfg.data.data_dir)[0]
    except M2DError:
        evaluated = []
    out: dict[str, str] = {}
    for ds, ds_split in [(name, split)] + [(ds, cfg.eval.split) for ds in evaluated]:
        try:
            out.update(file_checksums(ds, ds_split, cfg.data.data_dir))
        except M2DError:
            continue
    return out


def load_training(cfg: "Config") -> TrainData:
    """The training set's text columns (without mined negatives: :mod:`matryoshka2d.train.mining` adds those)."""
    loaded = load_train_source(cfg.method.task_loss, cfg.data.train, cfg.data.train_split, cfg.data.data_dir)
    if isinstance(loaded, Triplets):
        return TrainData([loaded.anchors, loaded.positives] + ([loaded.negatives] if loaded.negatives else []))
    return TrainData([loaded.sentences1, loaded.sentences2], list(loaded.scores))
