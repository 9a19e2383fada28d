"""MultipleNegativesRankingLoss: InfoNCE over a cell's cosine score matrix, with in-batch and hard negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cos_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of every row of ``a`` with every row of ``b``: ``[len(a), len(b)]``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE with in-batch and hard negatives.

    .. math:: \\mathcal{L} = -\\frac{1}{B}\\sum_i \\log
        \\frac{e^{\\tau \\cos(a_i, p_i)}}{\\sum_j e^{\\tau \\cos(a_i, p_j)} + \\sum_j e^{\\tau \\cos(a_i, n_j)}}

    Columns: ``[anchor, positive, *negatives]``. ``scale`` is tau (20 in sentence-transformers and AnglE).
    Cosine scoring: a truncated cell needs no renormalisation beforehand.

    References:
        - Representation Learning with Contrastive Predictive Coding (van den Oord et al. 2018, arXiv 1807.03748)
        - Efficient Natural Language Response Suggestion for Smart Reply (Henderson et al. 2017, arXiv 1705.00652)

    Inputs:
        +-------------------------------------------------+--------+
        | Texts                                           | Labels |
        +=================================================+========+
        | (anchor, positive) pairs                        | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative) triplets           | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative_1, ..., negative_n) | none   |
        +-------------------------------------------------+--------+
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        """The logits the loss is computed from (score alignment reuses them): ``[B, B * (columns - 1)]``."""
        return cos_matrix(embeddings[0], torch.cat(embeddings[1:], dim=0)) * self.scale

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        scores = self.scores(embeddings)
        return F.cross_entropy(scores, torch.arange(scores.size(0), device=scores.device))
