"""Alignment terms that pull a (layer, dim) cell towards a target: the last layer, a PCA target or full scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def feature_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T * KL(softmax(teacher / T) || softmax(student / T)), softmax over the FEATURE axis, batchmean.

    This is the 2DMSE self-distillation term (sentence-transformers ``AdaptiveLayerLoss``, AnglE
    ``compute_distillation_loss``). Detach ``teacher`` before calling for a stop-gradient teacher.
    """
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.softmax(teacher / temperature, dim=-1),
                    reduction="batchmean") * temperature


@torch.no_grad()
def pca_target(m: Tensor, k: int) -> Tensor:
    """ESE's compressed target (Li et al. 2024, arXiv 2402.14776v2; AnglE ``AngleESETrainer.pca_compress``).

    .. math:: A = \\mathrm{softmax}(m^\\top m / \\sqrt{H}),\\quad (U, S) = \\mathrm{svd\\_lowrank}(A, q=k),
              \\quad \\mathrm{target} = m\\,U\\,\\mathrm{diag}(S) \\in \\mathbb{R}^{B\\times k}

    No gradient flows through the target. ``svd_lowrank`` is randomised: seed torch for reproducibility.
    """
    a = F.softmax(m.T @ m / m.shape[-1] ** 0.5, dim=-1)
    u, s, _ = torch.svd_lowrank(a.float(), q=k)
    return m @ (u @ torch.diag(s)).to(m.dtype)


def mse_kl_align(x: Tensor, target: Tensor, temperature: float = 1.0, mse_weight: float = 1.0) -> Tensor:
    """ESE's Align(x, y) = mse_weight * MSE(x, y) + T * KL(softmax(y/T) || softmax(x/T)) (batchmean)."""
    loss = x.new_zeros(())
    if mse_weight > 0:
        loss = loss + mse_weight * F.mse_loss(x, target)
    if temperature > 0:
        loss = loss + feature_kl(x, target, temperature)
    return loss


def score_align(scores: Tensor, full_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """Tevatron-fork score alignment: MSE + T * KL of a cell's score distribution to the full model's (detached)."""
    full_scores = full_scores.detach()
    loss = F.mse_loss(scores, full_scores)
    if scores.dim() == 1:  # pairwise scores: distribution over the batch
        scores, full_scores = scores[None], full_scores[None]
    return loss + feature_kl(scores, full_scores, temperature)
