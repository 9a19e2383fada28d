"""Task losses, alignment terms and the 2D engine that combines them per step."""

from .alignment import feature_kl, mse_kl_align, pca_target, score_align
from .task import TASK_LOSSES, AnglELoss, CoSENTLoss, MultipleNegativesRankingLoss
from .two_d import Matryoshka2DLoss, StepPlan

__all__ = ["TASK_LOSSES", "AnglELoss", "CoSENTLoss", "Matryoshka2DLoss", "MultipleNegativesRankingLoss",
           "StepPlan", "feature_kl", "mse_kl_align", "pca_target", "score_align"]
