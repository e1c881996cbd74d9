"""SAD: Self Attention Distillation (Hou et al., ICCV 2019), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method

CHANNEL_REDUCTIONS = ("sum", "mean")


def attention_map(
    feature: torch.Tensor, size: Sequence[int], channel_reduction: str = "sum",
    normalize: bool = False,
) -> torch.Tensor:
    """Spatial attention of a B×C×h×w feature: ``Σ_c A²``, resized, softmax over positions.

    The map is resized (bilinear) to ``size`` = (H', W') before the spatial softmax, so maps of
    different stages are comparable. ``channel_reduction="mean"`` divides by C.
    ``normalize`` divides each resized energy map by its standard deviation over positions
    before the softmax (scale-free: the softmax then sees z-scores and cannot saturate).
    Returns B×H'×W', each map summing to 1.
    """
    energy = feature.float().pow(2).sum(1, keepdim=True)
    if channel_reduction == "mean":
        energy = energy / feature.shape[1]
    if tuple(energy.shape[-2:]) != tuple(size):
        energy = F.interpolate(energy, size=tuple(size), mode="bilinear", align_corners=False)
    batch = energy.shape[0]
    energy = energy.reshape(batch, -1)
    if normalize:  # the relative epsilon keeps a flat map flat instead of amplifying rounding
        mean = energy.mean(dim=1, keepdim=True)
        energy = (energy - mean) / (energy.std(dim=1, keepdim=True) + 1e-4 * mean + 1e-12)
    return F.softmax(energy, dim=1).reshape(batch, *size)


@register_method("sad")
class SAD(DistillMethod):
    """Each stage's attention map learns the next deeper stage's map; no learnable parts.

    With ``a_k`` = :func:`attention_map` of stage ``k`` (``stages`` from shallow to deep; by
    default stages 2-4, the reference's three blocks, so two MSE terms)::

        L = weight · Σ_k MSE(a_k, a_{k+1} detached)

    The maps are resized to ``size`` (default: the first stage's size). The paper adds SAD only
    once the network has been trained for a while, when its deeper attention maps are worth
    imitating; here the loss is zero until ``start`` of training is done (fraction 0..1, 0.4 by
    default, given by the trainer through :meth:`set_progress`).

    ``normalize`` (default on; segkd's, not the paper's): on pretrained features the spatial
    softmax of the summed energy saturates. Measured on EfficientNet-Lite0 with its ImageNet
    weights, 16 sod300 test images at 128 px (16×16 maps, uniform 0.0039), the mean max
    probability is 1.000 / 0.999 / 0.783 for stages 2 / 3 / 4 (0.960 / 0.979 / 1.000 at random
    init): one-hot maps whose softmax passes almost no gradient. Dividing each energy map by its
    spatial standard deviation first gives 0.051 / 0.050 / 0.016: graded maps. Their MSE is
    small (about 5e-5 per pair there, 7e-3 saturated), so the term is weak at the paper's
    weight 0.1; ``normalize=false`` restores the paper's map.

    Returns ``{"attention"}``, already weighted.
    """

    paper = (
        "Hou et al., Learning Lightweight Lane Detection CNNs by Self Attention Distillation, "
        "ICCV 2019"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False
    terms = {"attention": "weight · Σ_k MSE(attention map of stage k, of stage k+1 detached), from `start` on"}

    def __init__(
        self,
        stages: Sequence[str] = ("stage2", "stage3", "stage4"),
        weight: float = 0.1,
        start: float = 0.4,
        size: Sequence[int] | None = None,
        channel_reduction: str = "sum",
        normalize: bool = True,
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
        self.normalize = normalize
        self.student_taps = {name: name for name in self.stages}
        self.active = start == 0.0

    def set_progress(self, progress: float) -> None:
        self.active = progress >= self.start

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if not self.active:
            return {"attention": student["out"].new_zeros((), dtype=torch.float32)}
        size = self.size or tuple(student[self.stages[0]].shape[-2:])
        maps = [attention_map(student[s], size, self.channel_reduction, self.normalize)
                for s in self.stages]
        loss = torch.stack(
            [F.mse_loss(shallow, deep.detach()) for shallow, deep in zip(maps, maps[1:])]
        ).sum()
        return {"attention": self.weight * loss}
