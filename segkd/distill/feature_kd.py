"""Feature distillation at one tap: the student's feature regresses onto the teacher's (FitNets)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import check_choice, full_precision, resize_like, tap_channels
from segkd.distill.mapping import MAPPING_MODES, build_mapping

# Tapped tensors get this local name, so a tap on the feature point "aux" never hides the
# model's own "aux" output in the merged dict.
TAPPED_FEATURE = "feature_kd_input"
MODEL_OUTPUT = "out"


@register_method("feature_kd")
class FeatureKD(DistillMethod):
    """FitNets-style feature distillation (Romero et al., ICLR 2015) at a chosen place.

    ``loss = mean((mapping(f_s) − f_t)²)`` (or Smooth-L1). The student's tensor is resized
    bilinearly to the teacher's H×W when they differ.

    Where: ``student_at`` / ``teacher_at`` (default: both ``at``) name a feature point
    (``stage1..stage4``, ``ppm``, ``head``, ``aux_feat``, ``aux`` = aux-head logits, ``logits``)
    or ``"out"``, the model's final logits at input size. The default, ``stage3``, is where
    PSPNet's auxiliary branch is attached (ResNet-18: 256 channels, ResNet-50: 1024, so a
    mapping is learned). A frozen teacher runs in eval mode, where PSPNet skips its aux head, so
    ``aux_feat`` / ``aux`` can be tapped on the student only.

    Mapping: ``"auto"`` adds a learned 1×1 conv + BN on the student side (the FitNets
    regressor) only when the channel counts differ; ``"conv_bn"`` always; ``"conv"`` /
    ``"auto_conv"`` a plain bias-free 1×1 conv (always / when counts differ); ``"none"`` never.
    The FitNets of the CIRKD benchmark code is ``at="head", mapping="conv"``: a plain 1×1 conv
    always, then the MSE over every element.

    The source repo's "feature distillation at the aux layer" is
    ``student_at="aux", teacher_at="out", loss="smooth_l1", mapping="none"``: Smooth-L1 (β = 1)
    between the student's aux-head logits and the teacher's final logits, weight 1.0 (the source
    upsamples the aux logits with align_corners=True; here the resize uses align_corners=False).

    Returns ``{"feature_kd": weight · loss}``.
    """

    paper = "Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015"
    terms = {"feature_kd": "MSE (or Smooth-L1) of the mapped student feature to the teacher's"}

    def __init__(
        self,
        at: str = "stage3",
        student_at: str | None = None,
        teacher_at: str | None = None,
        mapping: str = "auto",
        loss: str = "mse",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        check_choice("loss", loss, ("mse", "smooth_l1"))
        check_choice("mapping", mapping, MAPPING_MODES)
        self.student_at = student_at or at
        self.teacher_at = teacher_at or at
        self.mapping_mode = mapping
        self.loss = loss
        self.weight = weight
        self.mapping: torch.nn.Module | None = None
        self.student_taps = _taps_for(self.student_at)
        self.teacher_taps = _taps_for(self.teacher_at)

    def setup(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        assert teacher_shapes is not None, "feature_kd needs a teacher"
        student_key, teacher_key = _key_for(self.student_at), _key_for(self.teacher_at)
        if self.mapping_mode == "none" and not (
            student_key in student_shapes and teacher_key in teacher_shapes
        ):
            return  # nothing to build, and model outputs need not be among the captured shapes
        student_channels = tap_channels(student_shapes, student_key, "student", self.name)
        teacher_channels = tap_channels(teacher_shapes, teacher_key, "teacher", self.name)
        self.mapping = build_mapping(
            self.mapping_mode, student_channels, teacher_channels, self.name
        )

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert teacher is not None, "feature_kd needs a teacher"
        source = student[_key_for(self.student_at)]
        target = teacher[_key_for(self.teacher_at)].detach()
        if self.mapping is not None:
            source = self.mapping(source)
        with full_precision(source):
            source = resize_like(source.float(), target)
            if self.loss == "mse":
                loss = F.mse_loss(source, target.float())
            else:
                loss = F.smooth_l1_loss(source, target.float(), beta=1.0)
        return {"feature_kd": self.weight * loss}


def _key_for(place: str) -> str:
    """Key of the tensor in the merged dict: the model output itself, or the tapped feature."""
    return MODEL_OUTPUT if place == MODEL_OUTPUT else TAPPED_FEATURE


def _taps_for(place: str) -> dict[str, str]:
    """Taps to install: none for the model output, else the feature point under a local name."""
    return {} if place == MODEL_OUTPUT else {TAPPED_FEATURE: place}
