"""CoSENTLoss: rank scored pairs by cosine in the order of their gold similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cosent_from_scores(scores: Tensor, labels: Tensor) -> Tensor:
    """log(1 + sum over pairs (i, j) with y_i > y_j of exp(s_j - s_i)), for already scaled scores s."""
    delta = scores[None, :] - scores[:, None]  # delta[i, j] = s_j - s_i
    ordered = labels[:, None] > labels[None, :]
    delta = delta.masked_fill(~ordered, float("-inf")).flatten()
    return torch.logsumexp(torch.cat([scores.new_zeros(1), delta]), dim=0)


class CoSENTLoss(nn.Module):
    """CoSENT: every pair ranked above the pairs with a lower gold score.

    .. math:: \\mathcal{L} = \\log\\Big(1 + \\sum_{y_i > y_j} e^{\\tau(\\cos(u_j, v_j) - \\cos(u_i, v_i))}\\Big)

    Columns: ``[sentence1, sentence2]`` with ``labels`` the gold similarity. ``scale`` is tau (20).

    References:
        - CoSENT: a more efficient sentence vector scheme than Sentence-BERT (Su 2022,
          https://kexue.fm/archives/8847)

    Inputs:
        +--------------------------------+------------------------+
        | Texts                          | Labels                 |
        +================================+========================+
        | (sentence1, sentence2) pairs   | float similarity score |
        +--------------------------------+------------------------+
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        """One scaled score per pair (score alignment reuses them): ``[B]``."""
        return F.cosine_similarity(embeddings[0], embeddings[1], dim=-1) * self.scale

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        return cosent_from_scores(self.scores(embeddings), labels)
