"""Task losses, alignment terms and the 2D engine that combines them per step.

Task losses, one per file (each takes a cell's embeddings per text column, and ``scores(embeddings)`` exposes the
logits the loss is computed from, for score alignment): :mod:`.mnrl`, :mod:`.dot_ce`, :mod:`.cosent`, :mod:`.angle`.
"""

from .alignment import feature_kl, mse_kl_align, pca_target, score_align
from .angle import AnglELoss
from .cosent import CoSENTLoss
from .dot_ce import DotCrossEntropyLoss
from .mnrl import MultipleNegativesRankingLoss
from .two_d import Matryoshka2DLoss, StepPlan

# name (``method.task_loss``, whose names ``methods.TaskLoss`` lists) -> class
TASK_LOSSES = {"mnrl": MultipleNegativesRankingLoss, "ce": DotCrossEntropyLoss, "cosent": CoSENTLoss,
               "angle": AnglELoss}

__all__ = ["TASK_LOSSES", "AnglELoss", "CoSENTLoss", "DotCrossEntropyLoss", "Matryoshka2DLoss",
           "MultipleNegativesRankingLoss", "StepPlan", "feature_kl", "mse_kl_align", "pca_target", "score_align"]
