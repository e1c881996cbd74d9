"""FRSKD: Refine Myself by Teaching Myself (Ji et al., CVPR 2021), for binary segmentation."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.bifpn import BiFPNSelfTeacher
from segkd.distill.functional import attention_transfer, check_choice, kl_binary, require_shapes
from segkd.distill.options import check_temperature
from segkd.models.losses import structure_loss

__all__ = ["FRSKD", "attention_transfer", "ramp_factor"]

SCHEDULES = ("official", "linear", "none")


def ramp_factor(progress: float, schedule: str, start: float, ramp: float) -> float:
    """Factor (0..1) of the soft and feature weights (α, β) at ``progress`` (fraction of training done).

    ``"official"`` (the official segmentation code): 0 until ``start``, then the sigmoid-shaped
    ``exp(-5(1 − s)²)`` with s the fraction of the remaining training done, reaching 1 at the end.
    ``"linear"``: from 0 to 1 over the first ``ramp`` of training. ``"none"``: 1 throughout.
    """
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        return 1.0 if ramp == 0 else min(max(progress / ramp, 0.0), 1.0)
    if progress < start:
        return 0.0
    s = min((progress - start) / (1.0 - start), 1.0) if start < 1 else 1.0
    return math.exp(-5.0 * (1.0 - s) ** 2)


@register_method("frskd")
class FRSKD(DistillMethod):
    """A BiFPN self-teacher refines the student's features and teaches it its refined maps::

        L = S(self-teacher) + r(t)·β·Σ_l AT(g_l, f̂_l) + r(t)·α·KL_T(σ(ẑ/T) ‖ σ(z/T))

    The self-teacher (:class:`~segkd.distill.bifpn.BiFPNSelfTeacher`, ``bifpn_layers`` stacked
    BiFPN layers: two in the official segmentation code) reads the student's ``levels`` taps and
    gives refined features ``f̂_l`` and logits ``ẑ`` (both detached as targets); attention
    transfer runs on the student's ``at_levels`` ``g_l`` (unset: ``levels`` themselves). The
    default is the official segmentation code's set-up (MingiJi/FRSKD, ``segmentation/main.py``,
    ``segmentation/utils/BiFPN.py``): the fusion network's neck ``fused1..4`` feeds the
    self-teacher and takes the attention transfer. ``levels=[stage1..4]`` with
    ``at_levels=[fused1..4]`` is segkd's former hybrid; ``levels=[stage1..4]`` alone is the
    classification paper's (backbone stages). ``z``: the student's ``out``. S is the structure
    loss (the binary counterpart of the paper's CE). The softened prediction is a per-pixel
    Bernoulli σ(z/T), KL by ``kl_binary`` (× T²). The self-teacher's own loss reaches the
    student's features, as in the paper. BiFPN fusion is fast normalised.

    α = 1 (``soft_weight``), β = 50 (``feature_weight``), T = 1 are the official segmentation
    defaults, and so is the schedule r(t) (:func:`ramp_factor`, given by the trainer through
    ``set_progress``): 0 for the first two thirds of training (``ramp_start``), then
    exp(-5(1 − s)²) up to 1 at the end. ``schedule="linear"`` ramps linearly over the first
    ``ramp`` of training instead (segkd's former default). Returns ``{"aux_sup", "feature",
    "soft"}``, weighted.
    """

    paper = (
        "Ji et al., Refine Myself by Teaching Myself: Feature Refinement via Self-Knowledge "
        "Distillation, CVPR 2021"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False
    renamed_options = {"alpha": "soft_weight", "beta": "feature_weight", "w_aux_sup": "aux_sup_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · structure loss of the self-teacher's prediction",
        "feature": "r(t) · feature_weight · Σ_l attention transfer (at_levels ← refined features, detached)",
        "soft": "r(t) · soft_weight · T² · Bernoulli KL(self-teacher detached ‖ out)",
    }

    def __init__(
        self,
        levels: Sequence[str] = ("fused1", "fused2", "fused3", "fused4"),
        at_levels: Sequence[str] | None = None,
        width: int = 64,
        bifpn_layers: int = 2,
        soft_weight: float = 1.0,
        feature_weight: float = 50.0,
        temperature: float = 1.0,
        schedule: str = "official",
        ramp_start: float = 2 / 3,
        ramp: float = 0.3,
        aux_sup_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if len(levels) < 2:
            raise ValueError(f"option 'levels' must name at least two taps, got {list(levels)}")
        if at_levels is not None and len(at_levels) != len(levels):
            raise ValueError(f"option 'at_levels' must name one tap per level of {list(levels)}, "
                             f"got {list(at_levels)}")
        if width < 1 or bifpn_layers < 1:
            raise ValueError(f"options 'width' and 'bifpn_layers' must be >= 1, got {width!r}, {bifpn_layers!r}")
        check_choice("schedule", schedule, SCHEDULES)
        for option, value in (("ramp", ramp), ("ramp_start", ramp_start)):
            if not 0 <= value <= 1:
                raise ValueError(f"option '{option}' must be a fraction in [0, 1], got {value!r}")
        self.levels, self.width, self.bifpn_layers = tuple(levels), width, bifpn_layers
        self.at_levels = tuple(at_levels) if at_levels is not None else self.levels
        self.soft_weight, self.feature_weight = soft_weight, feature_weight
        self.temperature = check_temperature(temperature, self.name)
        self.schedule, self.ramp_start, self.ramp, self.aux_sup_weight = schedule, ramp_start, ramp, aux_sup_weight
        self.ramp_factor = ramp_factor(0.0, schedule, ramp_start, ramp)
        self.student_taps = {name: name for name in (*self.levels, *self.at_levels)}

    def set_progress(self, progress: float) -> None:
        self.ramp_factor = ramp_factor(progress, self.schedule, self.ramp_start, self.ramp)

    def setup(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        channels = [student_shapes[n][1] for n in self.levels]
        self.self_teacher = BiFPNSelfTeacher(channels, self.width, self.bifpn_layers)

    def head_logits(self, student: Mapping[str, torch.Tensor],
                    size: torch.Size | tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"self_teacher": self.self_teacher([student[n] for n in self.levels], size)[1]}

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``student``: ``"out"`` B×1×H×W and the taps; ``batch["mask"]``: B×1×H×W in {0, 1}."""
        out = student["out"]
        refined, teacher_logits = self.self_teacher([student[n] for n in self.levels], out.shape[-2:])
        attention = torch.stack([
            attention_transfer(student[n], r.detach()) for n, r in zip(self.at_levels, refined, strict=True)
        ]).sum()
        soft = kl_binary(out, teacher_logits.detach(), self.temperature)
        return {
            "aux_sup": self.aux_sup_weight * structure_loss(teacher_logits, batch["mask"]),
            "feature": self.ramp_factor * self.feature_weight * attention,
            "soft": self.ramp_factor * self.soft_weight * soft,
        }
