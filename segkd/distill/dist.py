"""DIST: match the teacher's class-probability relations by correlation, not by exact values."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import full_precision
from segkd.distill.options import check_temperature

LOGITS = "logits"
AUX_LOGITS = "aux_logits"


@register_method("dist")
class DIST(DistillMethod):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022),
    dense-prediction form.

    Per-pixel class probabilities ``p = softmax(z / τ)`` are flattened over the batch to an
    N×C matrix (N = B·h·w pixels). With ρ the Pearson correlation:

    - inter-class relation: ``1 − mean_n ρ(p_s[n, :], p_t[n, :])`` (each pixel's class vector);
    - intra-class relation: ``1 − mean_c ρ(p_s[:, c], p_t[:, c])`` (each class across all pixels
      of the batch).

    ``loss = τ² · (β · inter + γ · intra)`` (τ: ``temperature``, β: ``inter_weight``, γ:
    ``intra_weight``). Defaults τ = 1, β = γ = 1, weight 1 follow the
    authors' segmentation code (the paper's setting); all pixels count, ignore labels included,
    as there. The logits are the classifier's output before upsampling (feature point
    ``logits``). The authors' code also distils the aux-head logits with factor 0.4: set
    ``aux_weight=0.4`` to do the same (term ``dist_aux``). That needs a teacher that computes
    its aux logits when frozen; a segkd PSPNet skips its aux head in eval mode, so the trainer
    refuses ``aux_weight > 0`` with it before training starts, naming the module.

    Returns ``{"dist_inter": weight·β·τ²·inter, "dist_intra": weight·γ·τ²·intra}``.
    """

    paper = "Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022"
    task = "semantic"
    terms = {"dist_inter": "1 − Pearson ρ of each pixel's class probabilities",
             "dist_intra": "1 − Pearson ρ of each class's probabilities over the batch's pixels",
             "dist_aux": "both relations on the aux logits (only with aux_weight > 0)"}
    renamed_options = {"tau": "temperature", "beta": "inter_weight", "gamma": "intra_weight"}

    def __init__(
        self,
        temperature: float = 1.0,
        inter_weight: float = 1.0,
        intra_weight: float = 1.0,
        weight: float = 1.0,
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, self.name)
        self.inter_weight = inter_weight
        self.intra_weight = intra_weight
        self.weight = weight
        self.aux_weight = aux_weight
        taps = {LOGITS: "logits"}
        if aux_weight:
            taps[AUX_LOGITS] = "aux"
        self.student_taps = dict(taps)
        self.teacher_taps = dict(taps)

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert teacher is not None, "dist needs a teacher"
        scale = self.weight * self.temperature**2
        inter, intra = self.relations(student[LOGITS], teacher[LOGITS].detach())
        terms = {"dist_inter": scale * self.inter_weight * inter,
                 "dist_intra": scale * self.intra_weight * intra}
        if self.aux_weight:
            aux_inter, aux_intra = self.relations(
                student[AUX_LOGITS], teacher[AUX_LOGITS].detach()
            )
            terms["dist_aux"] = (
                scale * self.aux_weight * (self.inter_weight * aux_inter + self.intra_weight * aux_intra)
            )
        return terms

    def relations(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×C×h×w logits → (inter-class, intra-class) relation losses, each a scalar."""
        with full_precision(student_logits):
            c = student_logits.shape[1]
            p_s = (student_logits.float() / self.temperature).softmax(dim=1).movedim(1, -1).reshape(-1, c)
            p_t = (teacher_logits.float() / self.temperature).softmax(dim=1).movedim(1, -1).reshape(-1, c)
            inter = 1 - _pearson(p_s, p_t, dim=1).mean()
            intra = 1 - _pearson(p_s, p_t, dim=0).mean()
        return inter, intra


def _pearson(x: torch.Tensor, y: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of ``x`` and ``y`` along ``dim`` (the other dim indexes the pairs)."""
    x = x - x.mean(dim=dim, keepdim=True)
    y = y - y.mean(dim=dim, keepdim=True)
    return (x * y).sum(dim=dim) / (x.norm(dim=dim) * y.norm(dim=dim) + eps)
