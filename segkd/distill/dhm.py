"""DHM: Dynamic Hierarchical Mimicking (Li & Chen, CVPR 2020), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from segkd.distill.base import register_method
from segkd.distill.functional import check_choice
from segkd.distill.heads import PredictionHead
from segkd.distill.replicas import DECODERS, build_branches
from segkd.distill.side_branches import FORKS, PAIRED_HEADS, STAGES, SideBranchMethod


@register_method("dhm")
class DHM(SideBranchMethod):
    """Side branches that replicate the later stages, all heads mimicking one another.

    A branch forks at each ``branch_from`` stage and runs copies of every later module of the
    student up to the last of ``stages`` (copied in :meth:`bind`, so they start from the
    student's current, e.g. ImageNet, weights), as the authors' code (d-li14/DHM,
    ``models/cifar/resnet.py``) replicates the later stages. With ``decoder="copy"`` (default)
    each branch then runs a copy of the student's decoder (same design, freshly initialised:
    see :func:`~segkd.distill.replicas.fresh_decoder`) over the shared shallow stages and its own
    deeper ones, so every branch predicts at full resolution like the inference head; ``"head"``
    puts a small prediction head on the branch's stride-32 map instead. With ``out``::

        L = aux_sup_weight·Σ_b S(z_b, mask) + mimic_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S, the softened prediction and the ordered pairs of heads (branches and ``out``, target detached,
    so every pair mimics both ways): as :class:`~segkd.distill.side_branches.SideBranchMethod`.

    Learning rates: the copied stages train at the backbone's LR (:meth:`param_groups`), the
    decoders at the head's, as their originals do; the reference trains all at one rate.

    Returns ``{"aux_sup", "mimic"}``, already weighted.
    """

    paper = (
        "Li & Chen, Dynamic Hierarchical Mimicking Towards Consistent Optimization Objectives, "
        "CVPR 2020"
    )
    pair_term = "mimic"
    built_in = "bind(student, teacher)"
    renamed_options = {"alpha": "mimic_weight", "sup_weight": "aux_sup_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · structure loss of each branch",
        "mimic": f"mimic_weight · {PAIRED_HEADS}",
    }

    def __init__(self, stages: Sequence[str] = STAGES, branch_from: Sequence[str] = FORKS, temperature: float = 1.0,
                 mimic_weight: float = 1.0, aux_sup_weight: float = 1.0, decoder: str = "copy",
                 head_channels: int = 64) -> None:
        super().__init__(stages, branch_from, temperature, aux_sup_weight, mimic_weight)
        check_choice("decoder", decoder, DECODERS)
        self.decoder, self.head_channels = decoder, head_channels

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Copy the stages after each fork point (and the decoder) from ``student``."""
        self.branches = build_branches(student, self.stages, self.branch_from, self.decoder, self.name)

    def setup_branches(self, student_shapes: Mapping[str, torch.Size]) -> None:
        if self.decoder == "head":  # a small head on each branch's deepest map
            channels = student_shapes[self.stages[-1]][1]
            for branch in self.branches:
                branch.head = PredictionHead(channels, 1, self.head_channels)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = [branch.param_groups() for branch in self.branches]
        return {key: [p for g in groups for p in g[key]] for key in ("backbone", "head")}
