"""SAD: Self Attention Distillation (Hou et al., ICCV 2019), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method

CHANNEL_REDUCTIONS = ("sum", "mean")


def attention_map(
    feature: torch.Tensor, size: Sequence[int], channel_reduction: str = "sum"
) -> torch.Tensor:
    """Spatial attention of a B×C×h×w feature: ``Σ_c A²``, resized, softmax over positions.

    The map is resized (bilinear) to ``size`` = (H', W') before the spatial softmax, so maps of
    different stages are comparable. ``channel_reduction="mean"`` divides by C, which keeps the
    softmax from saturating on very wide stages. Returns B×H'×W', each map summing to 1.
    """
    energy = feature.float().pow(2).sum(1, keepdim=True)
    if channel_reduction == "mean":
        energy = energy / feature.shape[1]
    if tuple(energy.shape[-2:]) != tuple(size):
        energy = F.interpolate(energy, size=tuple(size), mode="bilinear", align_corners=False)
    batch = energy.shape[0]
    return F.softmax(energy.reshape(batch, -1), dim=1).reshape(batch, *size)


@register_method("sad")
class SAD(DistillMethod):
    """Each stage's attention map learns the next deeper stage's map; no learnable parts.

    With ``a_k`` = :func:`attention_map` of stage ``k`` (``stages`` from shallow to deep)::

        L = weight · Σ_k MSE(a_k, a_{k+1} detached)

    The maps are resized to ``size`` (default: the first stage's size). The paper adds SAD only
    once the network has been trained for a while, when its deeper attention maps are worth
    imitating; here the loss is zero until ``start`` of training is done (fraction 0..1, 0.4 by
    default, given by the trainer through :meth:`set_progress`).

    Returns ``{"attention"}``, already weighted.
    """

    paper = (
        "Hou et al., Learning Lightweight Lane Detection CNNs by Self Attention Distillation, "
        "ICCV 2019"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        weight: float = 0.1,
        start: float = 0.4,
        size: Sequence[int] | None = None,
        channel_reduction: str = "sum",
    ) -> None:
        super().__init__()
        if len(stages) < 2:
            raise ValueError(f"sad: 'stages' needs at least two stages, got {list(stages)}")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"sad: 'start' must be a fraction of training in [0, 1], got {start}")
        if size is not None and len(size) != 2:
            raise ValueError(f"sad: 'size' must be [height, width], got {size}")
        if channel_reduction not in CHANNEL_REDUCTIONS:
            raise ValueError(
                f"sad: 'channel_reduction' must be one of {CHANNEL_REDUCTIONS}, "
                f"got '{channel_reduction}'"
            )
        self.stages = tuple(stages)
        self.weight = weight
        self.start = start
        self.size = tuple(size) if size is not None else None
        self.channel_reduction = channel_reduction
        self.student_taps = {name: name for name in self.stages}
        self.active = start == 0.0

    def set_progress(self, progress: float) -> None:
        self.active = progress >= self.start

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        if not self.active:
            return {"attention": student["out"].new_zeros((), dtype=torch.float32)}
        size = self.size or tuple(student[self.stages[0]].shape[-2:])
        maps = [attention_map(student[s], size, self.channel_reduction) for s in self.stages]
        loss = torch.stack(
            [F.mse_loss(shallow, deep.detach()) for shallow, deep in zip(maps, maps[1:])]
        ).sum()
        return {"attention": self.weight * loss}
