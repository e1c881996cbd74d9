"""FRSKD: Refine Myself by Teaching Myself (Ji et al., CVPR 2021), for binary segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import kl_binary, require_shapes, resize_like
from segkd.distill.heads import PredictionHead
from segkd.models.losses import structure_loss


def attention_transfer(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AT loss of one level: mean squared difference of L2-normalised spatial attention maps.

    The attention map of B×C×h×w features is ``mean_c(f²)`` flattened per sample and
    L2-normalised; channel counts may differ. ``target``'s map is resized (bilinear) to the
    student's h×w when they differ. Returns the mean over B×h·w.
    """
    a_s = student.float().pow(2).mean(dim=1, keepdim=True)
    a_t = resize_like(target.float().pow(2).mean(dim=1, keepdim=True), a_s)
    return (F.normalize(a_s.flatten(1), dim=1) - F.normalize(a_t.flatten(1), dim=1)).pow(2).mean()


class FastFusion(nn.Module):
    """BiFPN node: fast normalised fusion, then a 3×3 conv-BN-ReLU.

    ``Σ relu(w_i)·x_i / (Σ relu(w_i) + ε)`` over B×width×h×w inputs already resized to one size.
    """

    def __init__(self, n_inputs: int, width: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_inputs))
        self.eps = eps
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        fused = sum(wi * x for wi, x in zip(w, inputs, strict=True)) / (w.sum() + self.eps)
        return self.conv(fused)


class BiFPNSelfTeacher(nn.Module):
    """Lateral 1×1 convs to ``width``, a top-down then a bottom-up path, and a prediction head.

    ``forward(features, size)``: levels shallow → deep (B×C_i×h_i×w_i) → ``(refined, logits)``,
    ``refined[i]`` B×width×h_i×w_i and ``logits`` B×1×H×W at ``size``, predicted from the
    finest refined level (segmentation needs the fine grid; the classification paper uses the
    deepest).
    Upsampling is bilinear, downsampling adaptive max-pooling (any stride ratio works).
    """

    def __init__(self, in_channels: Sequence[int], width: int) -> None:
        super().__init__()
        n = len(in_channels)
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width))
            for c in in_channels
        )
        self.top_down = nn.ModuleList(FastFusion(2, width) for _ in range(n - 1))
        # middle levels fuse lateral + top-down + shallower; the deepest has no top-down node
        self.bottom_up = nn.ModuleList(
            FastFusion(3 if i < n - 1 else 2, width) for i in range(1, n)
        )
        self.head = PredictionHead(width)

    def forward(
        self, features: Sequence[torch.Tensor], size: torch.Size
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        lateral = [conv(f) for conv, f in zip(self.laterals, features, strict=True)]
        n = len(lateral)
        top_down = [lateral[-1]]
        for i in reversed(range(n - 1)):
            upsampled = resize_like(top_down[0], lateral[i])
            top_down.insert(0, self.top_down[i]([lateral[i], upsampled]))
        refined = [top_down[0]]
        for i in range(1, n):
            shallower = F.adaptive_max_pool2d(refined[-1], lateral[i].shape[-2:])
            inputs = [lateral[i], top_down[i], shallower] if i < n - 1 else [lateral[i], shallower]
            refined.append(self.bottom_up[i - 1](inputs))
        return refined, self.head.forward_to(refined[0], size)


@register_method("frskd")
class FRSKD(DistillMethod):
    """A BiFPN self-teacher refines the student's features and teaches it its refined maps::

        L = S(self-teacher) + ramp·β·Σ_l AT(f_l, f̂_l) + ramp·α·KL_T(σ(ẑ/T) ‖ σ(z/T))

    ``f_l``: the student's ``levels`` taps; ``f̂_l``, ``ẑ``: the self-teacher's refined features
    and logits (detached targets); ``z``: the student's ``out``. S is the structure loss (the
    binary counterpart of the paper's CE). The softened prediction is a per-pixel Bernoulli
    σ(z/T), KL by ``kl_binary`` (× T²). The self-teacher's own loss reaches the student's
    features, as in the paper. BiFPN fusion is fast normalised (learned, ReLU'd weights).

    α = 1, β = 50, T = 1 are the official segmentation defaults. α and β rise linearly from 0 to
    their value over the first ``ramp`` fraction of training (0.3 here: the official schedule
    is not documented; this lets the self-teacher learn before it teaches), via ``set_progress``;
    before the first call they are 0. Returns ``{"aux_sup", "feature", "soft"}``, weighted.
    """

    paper = (
        "Ji et al., Refine Myself by Teaching Myself: Feature Refinement via Self-Knowledge "
        "Distillation, CVPR 2021"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(
        self,
        levels: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        width: int = 64,
        alpha: float = 1.0,
        beta: float = 50.0,
        temperature: float = 1.0,
        ramp: float = 0.3,
        w_aux_sup: float = 1.0,
    ) -> None:
        super().__init__()
        if len(levels) < 2:
            raise ValueError(f"option 'levels' must name at least two taps, got {list(levels)}")
        if width < 1:
            raise ValueError(f"option 'width' must be a positive integer, got {width!r}")
        if temperature <= 0:
            raise ValueError(f"option 'temperature' must be > 0, got {temperature!r}")
        if not 0 <= ramp <= 1:
            raise ValueError(f"option 'ramp' must be a fraction in [0, 1], got {ramp!r}")
        self.levels, self.width = tuple(levels), width
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.ramp, self.w_aux_sup = ramp, w_aux_sup
        self.ramp_factor = 0.0 if ramp > 0 else 1.0
        self.student_taps = {name: name for name in self.levels}

    def set_progress(self, progress: float) -> None:
        self.ramp_factor = 1.0 if self.ramp == 0 else min(max(progress / self.ramp, 0.0), 1.0)

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        require_shapes(student_shapes, self.levels, self.name)
        channels = [student_shapes[n][1] for n in self.levels]
        self.self_teacher = BiFPNSelfTeacher(channels, self.width)

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        """``student``: ``"out"`` B×1×H×W and the taps; ``batch["mask"]``: B×1×H×W in {0, 1}."""
        out = student["out"]
        features = [student[n] for n in self.levels]
        refined, teacher_logits = self.self_teacher(features, out.shape[-2:])
        attention = torch.stack(
            [attention_transfer(f, r.detach()) for f, r in zip(features, refined, strict=True)]
        ).sum()
        soft = kl_binary(out, teacher_logits.detach(), self.temperature)
        return {
            "aux_sup": self.w_aux_sup * structure_loss(teacher_logits, batch["mask"]),
            "feature": self.ramp_factor * self.beta * attention,
            "soft": self.ramp_factor * self.alpha * soft,
        }
