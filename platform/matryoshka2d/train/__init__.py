"""Training: ``train(config, out_dir, hooks)`` (:mod:`.loop`), run as is on a laptop or as a Ray Train worker.

:mod:`.batches` what a run reads and in which order; :mod:`.checkpoints` exact resume and ``--restart``;
:mod:`.mining` hard negatives mined once by the start model. MLflow and Ray stay outside: the caller passes ``Hooks``.
"""

from ..data.sources import TrainData
from .batches import load_train_data, make_batches, token_lengths
from .checkpoints import checkpoints, restart
from .loop import Hooks, batch_loss, build_optimizer, evaluate_encoder, load_eval_sets, train

__all__ = ["Hooks", "TrainData", "batch_loss", "build_optimizer", "checkpoints", "evaluate_encoder", "load_eval_sets",
           "load_train_data", "make_batches", "restart", "token_lengths", "train"]
