"""DKS: Deeply-supervised Knowledge Synergy (Sun et al., CVPR 2019), for binary segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import deep_supervision, mutual_kl_binary, require_shapes
from segkd.distill.heads import PredictionHead


def conv_stack(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` × (3×3 conv → BN → ReLU): B×in×h×w → B×channels×h×w."""
    layers: list[nn.Module] = []
    for k in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


@register_method("dks")
class DKS(DistillMethod):
    """Deep-supervision heads after intermediate stages, all heads teaching one another.

    Each ``branch_from`` stage gets a small conv stack and a prediction head (full-resolution
    logits ``z_b``). With the student's ``out`` as the final head::

        L = sup_weight·Σ_b S(z_b, mask) + synergy_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S is the structure loss (the binary counterpart of cross-entropy). The softened prediction is
    a per-pixel Bernoulli ``σ(z/T)``. The synergy sum runs over ordered pairs of all heads
    including ``out`` with the target ``z_j`` detached, so ``out`` also learns from the
    auxiliary heads. The student's own structure loss is added by the trainer.

    Returns ``{"aux_sup", "synergy"}``, already weighted.
    """

    paper = "Sun et al., Deeply-supervised Knowledge Synergy, CVPR 2019"
    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(
        self,
        branch_from: Sequence[str] = ("stage2", "stage3"),
        temperature: float = 1.0,
        sup_weight: float = 1.0,
        synergy_weight: float = 1.0,
        branch_channels: int = 128,
        num_convs: int = 2,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        if not branch_from:
            raise ValueError("dks: 'branch_from' must name at least one stage")
        if temperature <= 0:
            raise ValueError(f"dks: 'temperature' must be > 0, got {temperature}")
        if num_convs < 0:
            raise ValueError(f"dks: 'num_convs' must be >= 0, got {num_convs}")
        self.branch_from = tuple(branch_from)
        self.temperature = temperature
        self.sup_weight = sup_weight
        self.synergy_weight = synergy_weight
        self.branch_channels = branch_channels
        self.num_convs = num_convs
        self.head_channels = head_channels
        self.student_taps = {name: name for name in self.branch_from}
        self.stacks = nn.ModuleList()
        self.heads = nn.ModuleList()

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        for stage in self.branch_from:
            channels = student_shapes[stage][1]
            width = self.branch_channels if self.num_convs else channels
            self.stacks.append(conv_stack(channels, width, self.num_convs))
            self.heads.append(PredictionHead(width, 1, self.head_channels))

    def branch_logits(
        self, student: Mapping[str, torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> list[torch.Tensor]:
        """Logits B×1×H×W of each auxiliary head, in ``branch_from`` order."""
        return [
            head.forward_to(stack(student[stage]), size)
            for stage, stack, head in zip(self.branch_from, self.stacks, self.heads)
        ]

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        synergy = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.sup_weight * sup, "synergy": self.synergy_weight * synergy}
