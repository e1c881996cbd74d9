"""DHM: Dynamic Hierarchical Mimicking (Li & Chen, CVPR 2020), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segkd.distill.base import register_method
from segkd.distill.branches import StageBranchMethod
from segkd.distill.functional import deep_supervision, mutual_kl_binary


@register_method("dhm")
class DHM(StageBranchMethod):
    """Side branches that replicate the later stages, all heads mimicking one another.

    A branch forks at each ``branch_from`` stage and runs copies of every later module of the
    student up to the last of ``stages`` (copied in :meth:`bind`, so they start from the
    student's current, e.g. ImageNet, weights). With ``decoder="copy"`` (default) each branch
    then runs a copy of the student's decoder (same design, freshly initialised: see
    :func:`~segkd.distill.replicas.fresh_decoder`) over the shared shallow stages and its own deeper
    ones, so every branch predicts at full resolution like the inference head; ``"head"`` puts a
    small prediction head on the branch's stride-32 map instead (weaker: ``out`` then imitates a
    coarser map). With the student's ``out`` as one more head::

        L = sup_weight·Σ_b S(z_b, mask) + α·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S is the structure loss (the binary counterpart of cross-entropy). The softened prediction is
    a per-pixel Bernoulli ``σ(z/T)``; the pairwise sum runs over ordered pairs of all heads
    (branches and ``out``), with the target ``z_j`` detached, so every pair mimics both ways.
    The student's own structure loss is added by the trainer.

    Learning rates: the copied stages train at the backbone's LR (:meth:`param_groups`), the
    decoders at the head's, as their originals do; the reference trains all at one rate.

    Returns ``{"aux_sup", "mimic"}``, already weighted.
    """

    paper = (
        "Li & Chen, Dynamic Hierarchical Mimicking Towards Consistent Optimization Objectives, "
        "CVPR 2020"
    )
    terms = {
        "aux_sup": "sup_weight · structure loss of each branch",
        "mimic": "alpha · T² · Bernoulli KL over every ordered pair of heads (branches and out), target detached",
    }

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        branch_from: Sequence[str] = ("stage2", "stage3"),
        temperature: float = 1.0,
        alpha: float = 1.0,
        sup_weight: float = 1.0,
        decoder: str = "copy",
        head_channels: int = 64,
    ) -> None:
        super().__init__(stages, branch_from, temperature, sup_weight, decoder, head_channels)
        self.alpha = alpha

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        mimic = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.sup_weight * sup, "mimic": self.alpha * mimic}
