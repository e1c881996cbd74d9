"""BYOT: Be Your Own Teacher (Zhang et al., ICCV 2019), for binary object segmentation."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import kl_binary, require_shapes, resize_like
from segkd.distill.heads import PredictionHead
from segkd.models.losses import structure_loss


def bottleneck(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1×1 reduce → 3×3 (``stride``) → 1×1 expand, each with BN + ReLU, as in ResNet's blocks."""
    mid = max(out_channels // 4, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def adaptation(shape: torch.Size, deepest: torch.Size) -> nn.Sequential:
    """Bottleneck blocks taking a C×h×w stage to the deepest tap's channels and (about) its size.

    One stride-2 block per halving (at least one block); the channels double per block like the
    backbone's stages, and the last block lands on the deepest channel count.
    """
    channels, out_ch = shape[1], deepest[1]
    steps = round(math.log2(shape[-2] / deepest[-2])) if shape[-2] > deepest[-2] else 0
    n_blocks = max(steps, 1)
    blocks = []
    for k in range(n_blocks):
        next_ch = out_ch if k == n_blocks - 1 else min(channels * 2, out_ch)
        blocks.append(bottleneck(channels, next_ch, stride=2 if k < steps else 1))
        channels = next_ch
    return nn.Sequential(*blocks)


@register_method("byot")
class BYOT(DistillMethod):
    """Heads on shallow stages learn from the network's own final prediction and deepest feature.

    Each shallow stage ``i`` gets an adaptation (bottleneck blocks to the deepest tap's channels
    and stride) giving ``F_i``, and a prediction head on ``F_i`` (full-resolution logits ``z_i``)::

        L = (1 − α)·Σ_i S(z_i, mask) + α·T²·Σ_i KL(σ(out/T) ‖ σ(z_i/T)) + λ·Σ_i ‖F_i − F_deep‖²

    S is the structure loss (the binary counterpart of the paper's cross-entropy). The softened
    prediction is a per-pixel Bernoulli ``σ(z/T)``; ``out`` (the student's final logits) and
    ``F_deep`` (the ``deepest`` tap) are detached targets. ``‖·‖²`` sums over C×h×w and is
    averaged over the batch (the official code also sums over the batch, which ties λ to the
    batch size); ``F_i`` is resized (bilinear) to ``F_deep`` when their sizes differ.

    The paper also scales the deepest classifier's own loss by (1 − α). The trainer adds the
    student's structure loss, so set its task-loss weight in the config's ``loss:`` section to
    ``1 − alpha`` (0.9 by default) to follow the paper exactly.

    Returns ``{"aux_sup", "kd", "hint"}``, already weighted.
    """

    paper = (
        "Zhang et al., Be Your Own Teacher: Improve the Performance of Convolutional Neural "
        "Networks via Self Distillation, ICCV 2019"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3"),
        deepest: str = "stage4",
        temperature: float = 3.0,
        alpha: float = 0.1,
        hint_weight: float = 1e-6,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        if not stages or deepest in stages:
            raise ValueError(f"byot: 'stages' must be non-empty and exclude deepest '{deepest}'")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"byot: 'alpha' must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"byot: 'temperature' must be > 0, got {temperature}")
        self.stages = tuple(stages)
        self.deepest = deepest
        self.temperature = temperature
        self.alpha = alpha
        self.hint_weight = hint_weight
        self.head_channels = head_channels
        self.student_taps = {name: name for name in (*self.stages, deepest)}
        self.adapters = nn.ModuleList()
        self.heads = nn.ModuleList()

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        deepest = student_shapes[self.deepest]
        for stage in self.stages:
            self.adapters.append(adaptation(student_shapes[stage], deepest))
            self.heads.append(PredictionHead(deepest[1], 1, self.head_channels))

    def branches(
        self, student: Mapping[str, torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(F_i, z_i)`` per shallow stage: adapted feature B×C_deep×h×w, logits B×1×H×W."""
        outputs = []
        for stage, adapter, head in zip(self.stages, self.adapters, self.heads):
            feature = adapter(student[stage])
            outputs.append((feature, head.forward_to(feature, size)))
        return outputs

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = student["out"]
        target_logits = out.detach()
        target_feature = student[self.deepest].detach().float()
        sup, kd, hint = [], [], []
        for feature, logits in self.branches(student, out.shape[-2:]):
            sup.append(structure_loss(logits, batch["mask"]))
            kd.append(kl_binary(logits, target_logits, self.temperature))
            diff = resize_like(feature.float(), target_feature) - target_feature
            hint.append(diff.pow(2).sum() / diff.shape[0])
        return {
            "aux_sup": (1 - self.alpha) * torch.stack(sup).sum(),
            "kd": self.alpha * torch.stack(kd).sum(),
            "hint": self.hint_weight * torch.stack(hint).sum(),
        }
