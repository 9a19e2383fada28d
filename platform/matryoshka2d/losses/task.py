"""Task losses applied to one (layer, dim) cell. Each takes the cell's embeddings per text column.

All of them score with cosine similarity, so a truncated cell needs no renormalisation beforehand.
``scores(embeddings)`` exposes the logits that the loss is computed from, for score alignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cos_matrix(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def cosent_from_scores(scores: Tensor, labels: Tensor) -> Tensor:
    """log(1 + sum over pairs (i, j) with y_i > y_j of exp(s_j - s_i)), for already scaled scores s."""
    delta = scores[None, :] - scores[:, None]  # delta[i, j] = s_j - s_i
    ordered = labels[:, None] > labels[None, :]
    delta = delta.masked_fill(~ordered, float("-inf")).flatten()
    return torch.logsumexp(torch.cat([scores.new_zeros(1), delta]), dim=0)


class MultipleNegativesRankingLoss(nn.Module):
    """InfoNCE with in-batch and hard negatives (van den Oord et al. 2018; Henderson et al. 2017).

    .. math:: \\mathcal{L} = -\\frac{1}{B}\\sum_i \\log
        \\frac{e^{\\tau \\cos(a_i, p_i)}}{\\sum_j e^{\\tau \\cos(a_i, p_j)} + \\sum_j e^{\\tau \\cos(a_i, n_j)}}

    Columns: ``[anchor, positive, *negatives]``. ``scale`` is tau (20 in sentence-transformers and AnglE).
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        return cos_matrix(embeddings[0], torch.cat(embeddings[1:], dim=0)) * self.scale

    def forward(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        scores = self.scores(embeddings)
        return F.cross_entropy(scores, torch.arange(scores.size(0), device=scores.device))


class DotCrossEntropyLoss(MultipleNegativesRankingLoss):
    r"""Cross-entropy over inner products with in-batch and hard negatives (DPR; Tevatron's ``DenseModel``, the
    seed's retrieval loss): no normalisation, so a truncated cell is scored on its raw first d features.

    .. math:: \mathcal{L} = -\frac{1}{B}\sum_i \log
        \frac{e^{\langle q_i, p_i\rangle / T}}{\sum_j e^{\langle q_i, p_j\rangle / T} + \sum_j e^{\langle q_i, n_j\rangle / T}}

    Columns: ``[query, positive, *negatives]``. ``scale`` is 1/T (1 in the seed).
    """

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        return embeddings[0] @ torch.cat(embeddings[1:], dim=0).T * self.scale


class CoSENTLoss(nn.Module):
    """CoSENT (Su 2022): rank pairs by cosine in the order of their gold scores.

    .. math:: \\mathcal{L} = \\log\\Big(1 + \\sum_{y_i > y_j} e^{\\tau(\\cos(u_j, v_j) - \\cos(u_i, v_i))}\\Big)

    Columns: ``[sentence1, sentence2]`` with ``labels`` the gold similarity.
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        return F.cosine_similarity(embeddings[0], embeddings[1], dim=-1) * self.scale

    def forward(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        return cosent_from_scores(self.scores(embeddings), labels)


class AnglELoss(CoSENTLoss):
    """AnglE's angle objective (Li & Li 2023, arXiv 2309.12871): CoSENT on the angle difference in complex space.

    Each embedding is split into real and imaginary halves, ``z = re + i*im``; the score of a pair is
    ``tau * |sum(z_u / z_v normalised by |z_u|/|z_v|)|``, ranked like CoSENT against the gold scores.
    Follows ``angle_emb.loss.angle_loss`` (SeanLee97/AnglE, pooling ``sum``).
    """

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        a, b = torch.chunk(embeddings[0], 2, dim=1)
        c, d = torch.chunk(embeddings[1], 2, dim=1)
        z = (c**2 + d**2).sum(1, keepdim=True)
        re, im = (a * c + b * d) / z, (b * c - a * d) / z
        ratio = (a**2 + b**2).sum(1, keepdim=True).sqrt() / z.sqrt()
        return torch.cat([re / ratio, im / ratio], dim=1).sum(1).abs() * self.scale


TASK_LOSSES = {"mnrl": MultipleNegativesRankingLoss, "ce": DotCrossEntropyLoss, "cosent": CoSENTLoss,
               "angle": AnglELoss}
IN_BATCH = ("mnrl", "ce")  # losses over a score matrix of in-batch (and hard) negatives: triplets, not scored pairs
