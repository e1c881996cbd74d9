"""Channel-wise distillation: each channel's spatial distribution follows the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from segkd.distill.base import register_method
from segkd.distill.functional import check_choice, full_precision, kl_rows, resize_like
from segkd.distill.mapping import MAPPING_MODES
from segkd.distill.options import check_temperature
from segkd.distill.paired import PairedTapMethod


@register_method("cwd")
class ChannelWiseDistillation(PairedTapMethod):
    """Channel-wise KD (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction",
    ICCV 2021).

    Each channel c of a B×C×H×W map becomes a distribution over the H·W positions,
    ``φ(y_c) = softmax(y_c / τ)`` over space; the loss is
    ``τ² / (B·C) · Σ_b Σ_c Σ_hw φ(t_c) · (log φ(t_c) − log φ(s_c))``, i.e. KL(teacher ‖ student)
    summed over positions and averaged over channels and images.

    Defaults follow the paper's logits setting: the classifier's output before upsampling
    (feature point ``logits``), τ = 4 (``temperature``), loss weight 3. ``at`` may name any feature
    point (the paper also distils the last feature map) or ``out``, the output at input size; when
    channel counts differ a 1×1 conv + BN maps the student (``mapping="auto"``), and the student is
    resized to the teacher's H×W if needed.
    ``mapping="auto_conv"`` is the reference code's mapping: a plain bias-free 1×1 conv, built
    only when the counts differ; with it the loss is the reference's
    ``KLDiv(reduction="sum") / (B·C) · τ²`` exactly.
    Ignore pixels are not masked: the spatial distributions span the whole map, as in the paper.

    Returns ``{"cwd": weight · loss}``.
    """

    paper = "Shu et al., Channel-wise Knowledge Distillation for Dense Prediction, ICCV 2021"
    terms = {"cwd": "τ²·KL(teacher ‖ student) of each channel's spatial softmax"}
    tapped = "cwd_input"
    renamed_options = {"tau": "temperature"}

    def __init__(self, temperature: float = 4.0, weight: float = 3.0, at: str = "logits",
                 mapping: str = "auto") -> None:
        super().__init__(at)
        check_choice("mapping", mapping, MAPPING_MODES)
        self.temperature = check_temperature(temperature, self.name)
        self.weight = weight
        self.mapping_mode = mapping
        self.mapping: torch.nn.Module | None = None

    def setup_pair(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]) -> None:
        self.mapping = self.pair_mapping(self.mapping_mode, student_shapes, teacher_shapes)

    def pair_losses(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                    batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        source, target = self.mapped_pair(student, teacher, self.mapping)
        tau = self.temperature
        with full_precision(source):
            source = resize_like(source.float(), target)
            b, c = target.shape[:2]
            kl_per_channel = kl_rows(  # B×C: each channel is a distribution over positions
                source.reshape(b, c, -1) / tau, target.float().reshape(b, c, -1) / tau
            )
            loss = kl_per_channel.mean() * tau**2
        return {"cwd": self.weight * loss}
