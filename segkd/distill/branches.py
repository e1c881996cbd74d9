"""What DHM and DKS share: side branches that replicate the student's later stages."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from segkd.distill.base import DistillMethod
from segkd.distill.functional import check_choice, require_shapes
from segkd.distill.heads import PredictionHead
from segkd.distill.replicas import DECODERS, build_branches


class StageBranchMethod(DistillMethod):
    """A branch forks at each ``branch_from`` stage and runs copies of every later module of the
    student up to the last of ``stages`` (copied in :meth:`bind`, so they start from the
    student's current weights), then a decoder (``"copy"``: the student's decoder design, freshly
    initialised) or a small head on the branch's deepest map (``"head"``). Copied stages train at
    the backbone's LR, decoders and heads at the head's (:meth:`param_groups`)."""

    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(self, stages: Sequence[str], branch_from: Sequence[str], temperature: float,
                 sup_weight: float, decoder: str, head_channels: int) -> None:
        super().__init__()
        late = [s for s in branch_from if s not in stages[:-1]]
        if not branch_from or late:
            raise ValueError(
                f"{self.name}: 'branch_from' must name stages before the last of {list(stages)}; "
                f"got {list(branch_from)}"
            )
        if temperature <= 0:
            raise ValueError(f"{self.name}: 'temperature' must be > 0, got {temperature}")
        check_choice("decoder", decoder, DECODERS)
        self.stages = tuple(stages)
        self.branch_from = tuple(branch_from)
        self.temperature = temperature
        self.sup_weight = sup_weight
        self.decoder = decoder
        self.head_channels = head_channels
        self.student_taps = {name: name for name in self.stages}
        self.branches = nn.ModuleList()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Copy the stages after each fork point (and the decoder) from ``student``."""
        self.branches = build_branches(student, self.stages, self.branch_from, self.decoder, self.name)

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        if self.decoder == "head":  # a small head on each branch's deepest map
            channels = student_shapes[self.stages[-1]][1]
            for branch in self.branches:
                branch.head = PredictionHead(channels, 1, self.head_channels)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = [branch.param_groups() for branch in self.branches]
        return {key: [p for g in groups for p in g[key]] for key in ("backbone", "head")}

    def branch_logits(
        self, student: Mapping[str, torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> list[torch.Tensor]:
        """Logits B×1×H×W of each branch, in ``branch_from`` order."""
        if len(self.branches) != len(self.branch_from):
            raise RuntimeError(f"{self.name}: call bind(student, teacher) before using the method")
        shared = [student[s] for s in self.stages]
        return [
            branch(shared[: self.stages.index(stage) + 1], size)
            for stage, branch in zip(self.branch_from, self.branches)
        ]
