"""DHM: Dynamic Hierarchical Mimicking (Li & Chen, CVPR 2020), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import check_choice, deep_supervision, mutual_kl_binary, require_shapes
from segkd.distill.heads import PredictionHead
from segkd.distill.options import check_temperature
from segkd.distill.replicas import DECODERS, build_branches


@register_method("dhm")
class DHM(DistillMethod):
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
    kind = "self"
    task = "binary"
    needs_teacher = False
    renamed_options = {"alpha": "mimic_weight", "sup_weight": "aux_sup_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · structure loss of each branch",
        "mimic": "mimic_weight · T² · Bernoulli KL over every ordered pair of heads (branches and out), "
                 "target detached",
    }

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        branch_from: Sequence[str] = ("stage2", "stage3"),
        temperature: float = 1.0,
        mimic_weight: float = 1.0,
        aux_sup_weight: float = 1.0,
        decoder: str = "copy",
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        late = [s for s in branch_from if s not in tuple(stages)[:-1]]
        if not branch_from or late:
            raise ValueError(f"dhm: 'branch_from' must name stages before the last of {list(stages)}; "
                             f"got {list(branch_from)}")
        check_choice("decoder", decoder, DECODERS)
        self.stages, self.branch_from = tuple(stages), tuple(branch_from)
        self.temperature = check_temperature(temperature, self.name)
        self.mimic_weight, self.aux_sup_weight = mimic_weight, aux_sup_weight
        self.decoder, self.head_channels = decoder, head_channels
        self.student_taps = {name: name for name in self.stages}
        self.branches = nn.ModuleList()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Copy the stages after each fork point (and the decoder) from ``student``."""
        self.branches = build_branches(student, self.stages, self.branch_from, self.decoder, self.name)

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        if self.decoder == "head":  # a small head on each branch's deepest map
            channels = student_shapes[self.stages[-1]][1]
            for branch in self.branches:
                branch.head = PredictionHead(channels, 1, self.head_channels)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = [branch.param_groups() for branch in self.branches]
        return {key: [p for g in groups for p in g[key]] for key in ("backbone", "head")}

    def branch_logits(self, student: Mapping[str, torch.Tensor],
                      size: torch.Size | tuple[int, int]) -> list[torch.Tensor]:
        """Logits B×1×H×W of each branch, in ``branch_from`` order."""
        if len(self.branches) != len(self.branch_from):
            raise RuntimeError(f"{self.name}: call bind(student, teacher) before using the method")
        shared = [student[s] for s in self.stages]
        return [branch(shared[: self.stages.index(stage) + 1], size)
                for stage, branch in zip(self.branch_from, self.branches)]

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        mimic = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.aux_sup_weight * sup, "mimic": self.mimic_weight * mimic}
