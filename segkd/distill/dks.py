"""DKS: Deeply-supervised Knowledge Synergy (Sun et al., CVPR 2019), for binary segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import deep_supervision, mutual_kl_binary, require_shapes
from segkd.distill.heads import SynergyBranch
from segkd.distill.options import check_temperature


@register_method("dks")
class DKS(DistillMethod):
    """Auxiliary branches of their own design on intermediate stages; every head is supervised
    and every pair of heads is matched ("knowledge synergy")::

        L = aux_sup_weight·Σ_b S(z_b, mask) + synergy_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    Branches, as the authors' code (sundw2014/DKS, ``wrn_DKS/resnet.py``): each ``branch_from``
    stage forks a branch of *fresh* residual blocks (:class:`~segkd.distill.heads.SynergyBranch`:
    ``blocks`` ResNet basic blocks per later stage, each stage's channels, stride 2 where the
    backbone halves the size) down to the deepest stage's resolution, then a prediction head
    (its classifier; here a 3×3 conv-BN-ReLU-1×1 conv, logits upsampled to the input size).
    Nothing is copied from the student (DHM, by contrast, replicates its later stages and
    decoder). The reference's branches use the backbone's group sizes (n, then n/2 blocks; the
    branch nearest the output twice as wide); one block per stage is segkd's lighter default.

    Loss, as ``wrn_DKS/main.py``: the task loss of every head at weight 1 (``out``'s is the
    trainer's) and the KL of every ordered pair of heads (branches and ``out``), target
    detached, at weight 1: every head teaches and learns from every other, ``out`` included.
    S is the structure loss (the binary counterpart of cross-entropy); the softened prediction
    is a per-pixel Bernoulli ``σ(z/T)`` (the reference: softmax at T 1).

    All branch parameters train at the head's LR (new layers). Returns ``{"aux_sup", "synergy"}``.
    """

    paper = "Sun et al., Deeply-supervised Knowledge Synergy, CVPR 2019"
    kind = "self"
    task = "binary"
    needs_teacher = False
    renamed_options = {"sup_weight": "aux_sup_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · structure loss of each auxiliary branch",
        "synergy": "synergy_weight · T² · Bernoulli KL over every ordered pair of heads (branches and out), "
                   "target detached",
    }

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        branch_from: Sequence[str] = ("stage2", "stage3"),
        blocks: int = 1,
        head_channels: int = 64,
        temperature: float = 1.0,
        aux_sup_weight: float = 1.0,
        synergy_weight: float = 1.0,
    ) -> None:
        super().__init__()
        late = [s for s in branch_from if s not in tuple(stages)[:-1]]
        if not branch_from or late:
            raise ValueError(f"dks: 'branch_from' must name stages before the last of {list(stages)}; "
                             f"got {list(branch_from)}")
        if blocks < 1:
            raise ValueError(f"dks: 'blocks' must be >= 1, got {blocks}")
        self.stages, self.branch_from = tuple(stages), tuple(branch_from)
        self.blocks, self.head_channels = blocks, head_channels
        self.temperature = check_temperature(temperature, self.name)
        self.aux_sup_weight, self.synergy_weight = aux_sup_weight, synergy_weight
        self.student_taps = {name: name for name in self.stages}
        self.branches = nn.ModuleList()

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        for fork in self.branch_from:
            shapes = [student_shapes[s] for s in self.stages[self.stages.index(fork):]]
            self.branches.append(SynergyBranch(shapes, self.blocks, self.head_channels))

    def branch_logits(self, student: Mapping[str, torch.Tensor],
                      size: torch.Size | tuple[int, int]) -> list[torch.Tensor]:
        """Logits B×1×H×W of each branch, in ``branch_from`` order."""
        if len(self.branches) != len(self.branch_from):
            raise RuntimeError("dks: call setup() before using the method")
        return [branch(student[fork], size) for fork, branch in zip(self.branch_from, self.branches)]

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        synergy = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.aux_sup_weight * sup, "synergy": self.synergy_weight * synergy}
