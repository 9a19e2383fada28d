"""The one 2D Matryoshka loss (:class:`Matryoshka2DLoss`). Every method (full, MRL, 2DMSE V1/V2, Starbucks,
separate) is a config of it; its docstring is the one place the formula is written down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..methods import ResolvedMethod
from .alignment import feature_kl, mse_kl_align, pca_target, score_align


@dataclass
class StepPlan:
    """What one step trains: task cells (layer, dim, weight), KL layers, PCA-aligned layers (layer, weight)."""

    cells: list[tuple[int, int, float]]
    kl_cells: list[tuple[int, int]] = field(default_factory=list)
    pca_layers: list[tuple[int, float]] = field(default_factory=list)
    also: list[int] = field(default_factory=list)  # layers needed besides those (fixed documents: the last)

    @property
    def layers(self) -> list[int]:
        used = {c[0] for c in self.cells} | {c[0] for c in self.kl_cells} | {p[0] for p in self.pca_layers}
        return sorted(used | set(self.also))


class Matryoshka2DLoss(nn.Module):
    """A task loss over (layer, dim) cells with optional KL, ESE-PCA and score alignment terms.

    .. math::

        \\mathcal{L} = \\lambda_{last} \\sum_{d \\in D_L} v_d\\, \\ell(E_L[:d])
          + \\frac{\\lambda_{prior}}{|S|} \\sum_{l \\in S} w(l) \\Big[ \\sum_{d \\in D_l} v_d\\, \\ell(E_l[:d])
          + \\alpha\\, \\mathrm{Align}(E_l[:k], \\mathrm{PCA}_k(E_l)) \\Big]
          + \\alpha\\, \\lambda_{last}\\, \\mathrm{Align}(E_L[:k], \\mathrm{PCA}_k(E_L))
          + \\beta \\sum_{l \\in S} T\\, \\mathrm{KL}(E_L / T \\,\\|\\, E_l / T)
          + \\gamma \\sum_{(l, d)} w_{l,d}\\, \\mathrm{ScoreAlign}(s_{l,d}, \\mathrm{sg}(s_{t(l),H}))

    with E_l the pooled embedding of layer l, S the prior layers drawn this step, D_l the dims drawn for
    layer l, w the layer weighting, v_d the dim weights, l the task loss (MNRL / dot-product CE / CoSENT / AnglE) and t(l) the
    score-alignment target (l itself or L). With ``fixed_documents`` the document columns of every cell come
    from layer L (queries from l).
    The draws use the loss's own ``random.Random`` in the order sentence-transformers'
    ``Matryoshka2dLoss`` uses (last-layer dims, then layers, then each layer's dims), so with the same seed
    the same cells are drawn; its state is checkpointed with the trainer.

    References: 2DMSE (Li et al. 2024, arXiv 2402.14776), ESE (arXiv 2402.14776v2), Matryoshka
    Representation Learning (Kusupati et al. 2022), Starbucks (Zhuang et al. 2024, arXiv 2410.13230),
    2D Matryoshka Training for IR (arXiv 2411.17299).

    Inputs (``forward(layer_embeddings, labels, plan)``, ``plan`` from :meth:`plan`):
        +--------------------------------------------------------------+-----------------------------------------+
        | layer_embeddings                                             | labels                                  |
        +==============================================================+=========================================+
        | ``{l: [anchor, positive, *negatives]}``: pooled [B, H] each  | none (MNRL, dot-product CE)             |
        +--------------------------------------------------------------+-----------------------------------------+
        | ``{l: [sentence1, sentence2]}``: pooled [B, H] each          | similarity scores [B] (CoSENT, AnglE)   |
        +--------------------------------------------------------------+-----------------------------------------+

    Returns ``(loss, parts)``: the scalar loss and each term's value by name (logged as ``loss/<name>``).
    """

    def __init__(self, method: ResolvedMethod, seed: int = 0):
        super().__init__()
        self.method = method
        cfg = method.config
        from . import TASK_LOSSES  # the registry beside the task losses, built after this module is imported

        self.task = TASK_LOSSES[cfg.task_loss](scale=cfg.scale)
        self.rng = random.Random(seed)

    # -- which cells this step ------------------------------------------------------------------------------
    def _draw(self, items: list, n: int, keep_order: bool = True) -> list:
        if 0 < n < len(items):
            idx = self.rng.sample(range(len(items)), n)
            return [items[i] for i in (sorted(idx) if keep_order else idx)]
        return list(items)

    def plan(self) -> StepPlan:
        m, cfg = self.method, self.method.config
        L = m.num_layers
        if m.pairs:
            cells = [(layer, dim, m.layer_weights.get(layer, 1.0) * m.dim_weight(dim)) for layer, dim in m.pairs]
            kl = [(layer, dim) for layer, dim in m.pairs if layer != L] if cfg.kl.weight > 0 else []
            return StepPlan(cells, kl, also=[L] if cfg.fixed_documents else [])
        cells, pca = [], []
        for dim in self._draw(m.last_dims, cfg.n_dims_per_step):
            cells.append((L, dim, cfg.last_layer_weight * m.dim_weight(dim)))
        if m.last_dims and cfg.pca_align.weight > 0:
            pca.append((L, cfg.last_layer_weight))
        layers = self._draw(m.prior_layers, cfg.n_layers_per_step, keep_order=False)
        share = cfg.prior_layers_weight / (len(layers) if cfg.prior_mean and layers else 1)
        for layer in layers:
            w = share * m.layer_weights[layer]
            for dim in self._draw(m.prior_dims, cfg.n_dims_per_step):
                cells.append((layer, dim, w * m.dim_weight(dim)))
            if cfg.pca_align.weight > 0:
                pca.append((layer, w))
        kl = [(layer, m.hidden_size) for layer in layers] if cfg.kl.weight > 0 else []
        return StepPlan(cells, kl, pca, [L] if cfg.fixed_documents else [])

    # -- the loss -------------------------------------------------------------------------------------------
    def forward(self, layer_embeddings: dict[int, list[Tensor]], labels: Tensor | None,
                plan: StepPlan) -> tuple[Tensor, dict[str, float]]:
        """``layer_embeddings[l]`` = pooled embeddings of layer l, one [B, H] tensor per text column."""
        m, cfg = self.method, self.method.config
        L, H = m.num_layers, m.hidden_size
        parts: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            parts[name] = parts[name] + value if name in parts else value

        def columns(layer: int, dim: int) -> list[Tensor]:
            docs = layer_embeddings[L if cfg.fixed_documents else layer][1:]  # fixed-doc: documents from L
            return [e[:, :dim] for e in [layer_embeddings[layer][0], *docs]]

        targets: dict[int, Tensor] = {}  # detached full-width scores, per target layer

        def target_scores(layer: int) -> Tensor:
            if layer not in targets:
                with torch.no_grad():
                    targets[layer] = self.task.scores(columns(layer, H))
            return targets[layer]

        for layer, dim, weight in plan.cells:
            cell = columns(layer, dim)
            target = layer if cfg.score_align.target == "layer" else L
            if cfg.score_align.weight > 0 and (layer, dim) != (target, H) and target in layer_embeddings:
                scores = self.task.scores(cell)
                add("task", weight * self._task_from_scores(scores, labels, cell))
                add("score_align", weight * cfg.score_align.weight
                    * score_align(scores, target_scores(target), cfg.score_align.temperature))
            else:
                add("task", weight * self.task(cell, labels))
        if plan.kl_cells:
            teacher = torch.cat(layer_embeddings[L], dim=0)
            teacher = teacher.detach() if cfg.kl.detach_teacher else teacher
            for layer, dim in plan.kl_cells:
                student = torch.cat(layer_embeddings[layer], dim=0)
                d = dim if cfg.kl.truncate else H
                add("kl", cfg.kl.weight * feature_kl(student[:, :d], teacher[:, :d], cfg.kl.temperature))
        for layer, weight in plan.pca_layers:
            full = torch.cat(layer_embeddings[layer], dim=0)
            target = pca_target(full, m.pca_k)
            align = mse_kl_align(full[:, :m.pca_k], target, cfg.pca_align.temperature, cfg.pca_align.mse_weight)
            add("pca_align", cfg.pca_align.weight * weight * align)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _task_from_scores(self, scores: Tensor, labels: Tensor | None, columns: list[Tensor]) -> Tensor:
        # MNRL from its score matrix (score_align needs the same scores, so compute them once)
        target = torch.arange(scores.size(0), device=scores.device)
        return nn.functional.cross_entropy(scores, target)

    def state_dict_rng(self) -> object:
        return self.rng.getstate()

    def load_rng(self, state: object) -> None:
        self.rng.setstate(state)
