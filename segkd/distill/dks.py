"""DKS: Deeply-supervised Knowledge Synergy (Sun et al., CVPR 2019), for binary segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segkd.distill.base import register_method
from segkd.distill.branches import StageBranchMethod
from segkd.distill.functional import deep_supervision, kl_binary, mutual_kl_binary


@register_method("dks")
class DKS(StageBranchMethod):
    """Auxiliary branches after intermediate stages, all heads teaching one another.

    As in the paper, each ``branch_from`` stage forks a branch that replicates the later stages
    of the network (here: copies of the student's later stages, taken in :meth:`bind`, so they
    start from its current, e.g. ImageNet, weights; the paper initialises its branches afresh).
    With ``decoder="copy"`` (default) each branch ends in a copy of the student's decoder (same
    design, freshly initialised: see :func:`~segkd.distill.heads.fresh_decoder`) over the shared
    shallow stages and its own deeper ones: a full-resolution prediction like ``out``. With these
    defaults DKS builds the same branches as :class:`~segkd.distill.dhm.DHM` and its synergy term
    equals DHM's mimicking term (both papers: every head supervised, every ordered pair of heads
    matched by KL with the target detached); they differ with ``decoder="head"``.
    With the student's ``out`` as the final head::

        L = sup_weight·Σ_b S(z_b, mask) + synergy_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S is the structure loss (the binary counterpart of cross-entropy). The softened prediction is
    a per-pixel Bernoulli ``σ(z/T)``; the synergy sum runs over ordered pairs of heads with the
    target ``z_j`` detached. ``out`` learns only from heads at least as fine as itself: with
    ``decoder="head"`` (a small head on each branch's stride-32 map) the branches still learn
    from ``out`` and from each other, but ``out`` is not pulled towards their coarser maps. The
    student's own structure loss is added by the trainer. Copied stages train at the backbone's
    LR, decoders at the head's (:meth:`param_groups`).

    Returns ``{"aux_sup", "synergy"}``, already weighted.
    """

    paper = "Sun et al., Deeply-supervised Knowledge Synergy, CVPR 2019"
    terms = {
        "aux_sup": "sup_weight · structure loss of each branch",
        "synergy": "synergy_weight · T² · Bernoulli KL over ordered pairs of heads, target detached; "
                   "out learns only from heads as fine as itself",
    }

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        branch_from: Sequence[str] = ("stage2", "stage3"),
        temperature: float = 1.0,
        sup_weight: float = 1.0,
        synergy_weight: float = 1.0,
        decoder: str = "copy",
        head_channels: int = 64,
    ) -> None:
        super().__init__(stages, branch_from, temperature, sup_weight, decoder, head_channels)
        self.synergy_weight = synergy_weight

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        if self.decoder == "copy":
            synergy = mutual_kl_binary([out, *logits], self.temperature)
        else:  # out is never a learner of the coarser heads
            from_out = [kl_binary(z, out.detach(), self.temperature) for z in logits]
            synergy = torch.stack(from_out).sum()
            if len(logits) > 1:
                synergy = synergy + mutual_kl_binary(logits, self.temperature)
        return {"aux_sup": self.sup_weight * sup, "synergy": self.synergy_weight * synergy}
