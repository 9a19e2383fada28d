"""DotCrossEntropyLoss: cross-entropy over raw inner products, with in-batch and hard negatives (DPR / Tevatron)."""

from __future__ import annotations

import torch
from torch import Tensor

from .mnrl import MultipleNegativesRankingLoss


class DotCrossEntropyLoss(MultipleNegativesRankingLoss):
    r"""Cross-entropy over inner products with in-batch and hard negatives (Tevatron's ``DenseModel``, the seed's
    retrieval loss): no normalisation, so a truncated cell is scored on its raw first d features.

    .. math:: \mathcal{L} = -\frac{1}{B}\sum_i \log
        \frac{e^{\langle q_i, p_i\rangle / T}}{\sum_j e^{\langle q_i, p_j\rangle / T} + \sum_j e^{\langle q_i, n_j\rangle / T}}

    Columns: ``[query, positive, *negatives]``. ``scale`` is 1/T (1 in the seed).

    References:
        - Dense Passage Retrieval for Open-Domain Question Answering (Karpukhin et al. 2020, arXiv 2004.04906)
        - Tevatron: An Efficient and Flexible Toolkit for Dense Retrieval (Gao et al. 2022, arXiv 2203.05765)

    Inputs:
        +------------------------------------------------+--------+
        | Texts                                          | Labels |
        +================================================+========+
        | (query, positive) pairs                        | none   |
        +------------------------------------------------+--------+
        | (query, positive, negative) triplets           | none   |
        +------------------------------------------------+--------+
        | (query, positive, negative_1, ..., negative_n) | none   |
        +------------------------------------------------+--------+
    """

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        return embeddings[0] @ torch.cat(embeddings[1:], dim=0).T * self.scale
