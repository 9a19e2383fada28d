"""Methods are data: every 2D Matryoshka method is a :class:`MethodConfig` of the one 2D loss.

A config speaks in model-independent terms (``"1..L-1"``, ``[128, "H"]``: the grammar of :mod:`.cells`);
:meth:`MethodConfig.resolve` turns it into concrete layers/dims for a model with L blocks and hidden size H,
checking every field.
Layers are ``hidden_states`` indices: 0 = embedding output, 1..L = transformer blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .cells import LAYER_SCHEMES, Expr, eval_expr, layer_weights, parse_dims, parse_layers
from .errors import M2DError

TaskLoss = Literal["mnrl", "ce", "cosent", "angle"]  # the one list of names; ``losses.TASK_LOSSES`` maps them to classes
IN_BATCH = ("mnrl", "ce")  # losses over a score matrix of in-batch (and hard) negatives: triplets, not scored pairs


def _descending(dims: list[int]) -> list[int]:
    return sorted(dims, reverse=True)  # largest first, like MatryoshkaLoss: the order cells are drawn in


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # NaN is never a setting


class KLConfig(_Strict):
    """Feature-softmax KL of each trained prior layer to the last layer (2DMSE self-distillation)."""

    weight: float = Field(0.0, ge=0, description="0 switches the term off")
    temperature: float = Field(0.3, gt=0)
    detach_teacher: bool = True
    truncate: bool = False  # Starbucks: compare cell (l, d) with the last layer truncated to the same d


class PCAAlignConfig(_Strict):
    """ESE: Align(E_l[:k], PCA_k(E_l)) = MSE + KL, on the last layer and every trained prior layer."""

    weight: float = Field(0.0, ge=0)
    k: Expr = 128
    temperature: float = Field(1.0, ge=0)
    mse_weight: float = Field(1.0, ge=0)


class ScoreAlignConfig(_Strict):
    """Tevatron fork: MSE + KL of every cell's scores to detached full-width scores, times the cell's weight.

    ``target``: ``layer`` = the same layer at full width (the fork's default), ``last`` = the last layer at full
    width (its ``compare_to_last_layer``). The fork divides the term by batch x documents: use that as ``weight``.
    """

    weight: float = Field(0.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    target: Literal["layer", "last"] = "last"


class MethodConfig(_Strict):
    """One configurable 2D loss; presets under ``experiments/configs/`` set these fields.

    Per step: the last layer L gets the task loss at ``last_layer_dims``; ``n_layers_per_step`` layers
    drawn from ``prior_layers`` get it at ``prior_dims`` (``n_dims_per_step`` drawn per layer), weighted
    ``prior_layers_weight * w(l) / n`` (``n`` = number of drawn layers if ``prior_mean``). ``pairs``
    replaces both with fixed cells. KL, PCA and score alignment are toggles with weights.
    """

    name: str = "custom"
    task_loss: TaskLoss = "mnrl"
    scale: float = Field(20.0, gt=0)
    last_layer_dims: Expr | list[Expr] = "H"
    last_layer_weight: float = Field(1.0, ge=0)
    prior_layers: Expr | list[Expr] = "none"
    prior_dims: Expr | list[Expr] = "H"
    prior_layers_weight: float = Field(1.0, ge=0)
    prior_mean: bool = True
    n_layers_per_step: int = -1
    n_dims_per_step: int = -1
    layer_weighting: str | list[float] = "uniform"
    layer_offset: int = 0
    exponential_base: float = Field(0.5, gt=0)
    dim_weights: dict[int, float] = Field(default_factory=dict)
    sublayer_full_dim: bool = False
    pairs: list[tuple[Expr, Expr]] | None = None
    pairs_reference: tuple[int, int] | None = None
    truncate_model: bool = False  # "separate": cut the encoder to the single pair's layer before training
    fixed_documents: bool = False  # retrieval "fixed-doc": document columns always from the last layer
    kl: KLConfig = Field(default_factory=KLConfig)
    pca_align: PCAAlignConfig = Field(default_factory=PCAAlignConfig)
    score_align: ScoreAlignConfig = Field(default_factory=ScoreAlignConfig)

    @field_validator("layer_weighting")
    @classmethod
    def _scheme(cls, value):
        if isinstance(value, str) and value not in LAYER_SCHEMES:
            raise ValueError(f"unknown scheme {value!r}; allowed {', '.join(LAYER_SCHEMES)} or a list of floats")
        return value

    @field_validator("n_layers_per_step", "n_dims_per_step")
    @classmethod
    def _per_step(cls, value):
        if value == 0 or value < -1:
            raise ValueError("must be -1 (all) or a positive count")
        return value

    def resolve(self, num_layers: int, hidden_size: int) -> "ResolvedMethod":
        L, H = num_layers, hidden_size
        f = "method."
        if self.pairs:
            pairs = [self._scale_pair(p, L, H) for p in self.pairs]
            for layer, dim in pairs:
                if not 0 <= layer <= L:
                    raise M2DError(f"{f}pairs: layer {layer} is out of range; allowed 0..{L}")
                if not 1 <= dim <= H:
                    raise M2DError(f"{f}pairs: dim {dim} is out of range; allowed 1..{H}")
            last_dims, prior, prior_dims = [], [], []
        else:
            pairs = []
            last_dims = _descending(parse_dims(self.last_layer_dims, H, f + "last_layer_dims")) \
                if self.last_layer_weight > 0 else []
            prior = parse_layers(self.prior_layers, L, f + "prior_layers", allow_none=True)
            if L in prior:
                raise M2DError(f"{f}prior_layers: must not contain the last layer {L}; allowed 0..{L - 1}")
            prior_dims = _descending(parse_dims(self.prior_dims, H, f + "prior_dims")) if prior else []
            if self.sublayer_full_dim and prior and H not in prior_dims:
                prior_dims = [H] + prior_dims
            if not last_dims and not prior:
                raise M2DError("method: empty cell set; set last_layer_weight > 0 or prior_layers or pairs")
        for dim in self.dim_weights:
            if not 1 <= dim <= H:
                raise M2DError(f"{f}dim_weights: dim {dim} is out of range; allowed 1..{H}")
        weights = layer_weights(self.layer_weighting, prior or [p[0] for p in pairs], L, self.layer_offset,
                                self.exponential_base, prefix=f)
        k = eval_expr(self.pca_align.k, L, H, f + "pca_align.k") if self.pca_align.weight > 0 else 0
        if self.pca_align.weight > 0 and not 1 <= k <= H:
            raise M2DError(f"{f}pca_align.k: {k} is out of range; allowed 1..{H}")
        if self.score_align.weight > 0 and self.task_loss not in IN_BATCH:
            raise M2DError(f"{f}score_align: needs task_loss 'mnrl' or 'ce' (a score matrix); got {self.task_loss!r}")
        if self.fixed_documents and self.task_loss not in IN_BATCH:
            raise M2DError(f"{f}fixed_documents: needs task_loss 'mnrl' or 'ce' (query and document columns); "
                           f"got {self.task_loss!r}")
        return ResolvedMethod(config=self, num_layers=L, hidden_size=H, last_dims=last_dims, prior_layers=prior,
                              prior_dims=prior_dims, pairs=pairs, layer_weights=weights, pca_k=k)

    def _scale_pair(self, pair: tuple[Expr, Expr], L: int, H: int) -> tuple[int, int]:
        layer = eval_expr(pair[0], L, H, "method.pairs")
        dim = eval_expr(pair[1], L, H, "method.pairs")
        if self.pairs_reference:  # e.g. Starbucks' (2, 32) ... (12, 768) for bert-base, scaled to this model
            ref_l, ref_h = self.pairs_reference
            layer, dim = max(1, round(layer * L / ref_l)), max(1, round(dim * H / ref_h))
        return layer, dim


@dataclass
class ResolvedMethod:
    """A method with concrete layers, dims and weights for one model."""

    config: MethodConfig
    num_layers: int
    hidden_size: int
    last_dims: list[int]
    prior_layers: list[int]
    prior_dims: list[int]
    pairs: list[tuple[int, int]]
    layer_weights: dict[int, float] = field(default_factory=dict)
    pca_k: int = 0

    def dim_weight(self, dim: int) -> float:
        return float(self.config.dim_weights.get(dim, 1.0))

    @property
    def trained_cells(self) -> list[tuple[int, int]]:
        """Every cell that can receive a task loss (before per-step sampling)."""
        if self.pairs:
            return list(self.pairs)
        cells = [(self.num_layers, d) for d in self.last_dims]
        return cells + [(layer, d) for layer in self.prior_layers for d in self.prior_dims]
