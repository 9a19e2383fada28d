"""AnglELoss: CoSENT on the angle difference of two embeddings in complex space."""

from __future__ import annotations

import torch
from torch import Tensor

from .cosent import CoSENTLoss


class AnglELoss(CoSENTLoss):
    """AnglE's angle objective: CoSENT with an angle score instead of the cosine.

    Each embedding (of even dim) is split into real and imaginary halves, ``u = a + i b`` and ``v = c + i d``; the
    score of a pair sums the real and imaginary parts of ``u * conj(v)`` (feature-wise), over ``|u| |v|``:

    .. math:: s(u, v) = \\tau \\frac{\\big|\\sum_k (a_k c_k + b_k d_k) + (b_k c_k - a_k d_k)\\big|}{\\|u\\|\\,\\|v\\|},
              \\qquad \\mathcal{L} = \\log\\Big(1 + \\sum_{y_i > y_j} e^{s(u_j, v_j) - s(u_i, v_i)}\\Big)

    Follows ``angle_emb.loss.angle_loss`` (SeanLee97/AnglE, pooling ``sum``).

    References:
        - AnglE-optimized Text Embeddings (Li & Li 2023, arXiv 2309.12871)

    Inputs:
        +----------------------------------------+------------------------+
        | Texts                                  | Labels                 |
        +========================================+========================+
        | (sentence1, sentence2) pairs, even dim | float similarity score |
        +----------------------------------------+------------------------+
    """

    def scores(self, embeddings: list[Tensor]) -> Tensor:
        a, b = torch.chunk(embeddings[0], 2, dim=1)
        c, d = torch.chunk(embeddings[1], 2, dim=1)
        z = (c**2 + d**2).sum(1, keepdim=True)
        re, im = (a * c + b * d) / z, (b * c - a * d) / z
        ratio = (a**2 + b**2).sum(1, keepdim=True).sqrt() / z.sqrt()
        return torch.cat([re / ratio, im / ratio], dim=1).sum(1).abs() * self.scale
