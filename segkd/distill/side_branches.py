"""The family of DHM and DKS: side branches fork at intermediate stages of the student, each branch is
supervised like the student, and every pair of heads (the branches and ``out``) is matched.

``SideBranchMethod`` holds what the two share (options, taps, running the branches, the loss); DKS's
branches of fresh residual stages are here too, DHM's copies of the student's later stages in ``replicas``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from segkd.distill.base import DistillMethod
from segkd.distill.functional import deep_supervision, mutual_kl_binary, require_shapes
from segkd.distill.heads import PredictionHead
from segkd.distill.options import check_temperature
from segkd.models.base import resize_to

STAGES = ("stage1", "stage2", "stage3", "stage4")  # the default stages of DHM and DKS, finest first
FORKS = ("stage2", "stage3")  # and the stages their branches fork at by default
PAIRED_HEADS = "T² · Bernoulli KL over every ordered pair of heads (branches and out), target detached"


class SideBranchMethod(DistillMethod):
    """Branches forked at the ``branch_from`` stages of ``stages`` (finest first)::

        L = aux_sup_weight·Σ_b S(z_b, mask) + pair_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S is the structure loss (the binary counterpart of cross-entropy); the softened prediction is a
    per-pixel Bernoulli ``σ(z/T)``; the pairwise sum runs over ordered pairs of all heads, target
    detached, so every pair matches both ways. The student's own structure loss is the trainer's.

    Subclasses fill ``branches`` (in ``bind`` or ``setup_branches``), one per ``branch_from`` stage:
    ``branch(shared, size)`` maps the stage features up to its fork (finest first) to B×1×H×W logits
    at ``size``. They name the pairwise term (``pair_term``) and where the branches are built
    (``built_in``, for the error of a method used before).
    """

    kind = "self"
    task = "binary"
    needs_teacher = False
    pair_term: ClassVar[str] = ""
    built_in: ClassVar[str] = "setup()"

    def __init__(self, stages: Sequence[str], branch_from: Sequence[str], temperature: float,
                 aux_sup_weight: float, pair_weight: float) -> None:
        super().__init__()
        late = [s for s in branch_from if s not in tuple(stages)[:-1]]
        if not branch_from or late:
            raise ValueError(f"{self.name}: 'branch_from' must name stages before the last of {list(stages)}; "
                             f"got {list(branch_from)}")
        self.stages, self.branch_from = tuple(stages), tuple(branch_from)
        self.temperature = check_temperature(temperature, self.name)
        self.aux_sup_weight = aux_sup_weight
        # stored under the option's own name (DHM's mimic_weight, DKS's synergy_weight), so it reads as written
        setattr(self, self.pair_option, pair_weight)
        self.student_taps = {name: name for name in self.stages}
        self.branches = nn.ModuleList()

    @property
    def pair_option(self) -> str:
        """The option that weighs the pairwise term: ``<pair_term>_weight``."""
        return f"{self.pair_term}_weight"

    @property
    def pair_weight(self) -> float:
        return getattr(self, self.pair_option)

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        self.setup_branches(student_shapes)

    def setup_branches(self, student_shapes: Mapping[str, torch.Size]) -> None:
        """Build (or complete) the branches from the stages' shapes (default: nothing to build)."""

    def branch_logits(self, student: Mapping[str, torch.Tensor],
                      size: torch.Size | tuple[int, int]) -> list[torch.Tensor]:
        """Logits B×1×H×W of each branch, in ``branch_from`` order."""
        return [branch(shared, size) for branch, shared in self.branch_inputs(student)]

    def head_logits(self, student: Mapping[str, torch.Tensor],
                    size: torch.Size | tuple[int, int]) -> dict[str, torch.Tensor]:
        return {f"branch@{fork}": z for fork, z in zip(self.branch_from, self.branch_logits(student, size))}

    def branch_inputs(self, student: Mapping[str, torch.Tensor]) -> list[tuple[nn.Module, list[torch.Tensor]]]:
        """Each branch with the stage features up to its fork (finest first), in ``branch_from`` order."""
        if len(self.branches) != len(self.branch_from):
            raise RuntimeError(f"{self.name}: call {self.built_in} before using the method")
        shared = [student[s] for s in self.stages]
        return [(branch, shared[: self.stages.index(fork) + 1])
                for fork, branch in zip(self.branch_from, self.branches)]

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        supervision = deep_supervision(logits, batch["mask"])
        pairs = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.aux_sup_weight * supervision, self.pair_term: self.pair_weight * pairs}


def residual_stage(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    """``blocks`` fresh ResNet basic blocks, the first changing channels and stride (1×1 shortcut)."""
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(out_channels))
    layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SynergyBranch(nn.Module):
    """DKS's branch: freshly initialised residual stages from a fork stage down to the backbone's
    deepest stage, then a :class:`PredictionHead` (full-resolution logits).

    ``shapes``: the shapes of the fork stage and of every later stage (B×C_i×h_i×w_i, finest
    first). One :func:`residual_stage` per later stage gives its channels, with stride 2 where
    the backbone halves the size (1 where it dilates instead). ``forward(shared, size)``: the stage
    features up to the fork (only the fork's, the last, is read) → B×1×size logits.
    """

    def __init__(self, shapes: list[torch.Size], blocks: int, head_channels: int) -> None:
        super().__init__()
        stages = []
        for before, after in zip(shapes[:-1], shapes[1:]):
            stride = max(1, round(before[-2] / after[-2]))
            stages.append(residual_stage(int(before[1]), int(after[1]), stride, blocks))
        self.stages = nn.Sequential(*stages)
        self.head = PredictionHead(int(shapes[-1][1]), 1, head_channels)

    def forward(self, shared: Sequence[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return resize_to(self.native(shared), size, align_corners=False)

    def native(self, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        """The logits at the deepest stage's resolution, before upsampling."""
        return self.head(self.stages(shared[-1]))
