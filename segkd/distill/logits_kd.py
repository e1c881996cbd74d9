"""Pixel-wise logits distillation: each pixel's class distribution follows the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import (
    check_choice,
    full_precision,
    kl_binary,
    kl_softmax,
    labels_at,
)

# The source repo multiplies its KD loss by 19, a class count copied from a Cityscapes code base;
# it is kept only for the ``source_exact`` reproduction and does not follow the data set.
SOURCE_REPO_CITYSCAPES_FACTOR = 19


@register_method("logits_kd")
class LogitsKD(DistillMethod):
    """Pixel-wise KD (Hinton et al. 2015; the pixel-wise term of Liu et al., CVPR 2019).

    ``loss = T² · mean over labelled pixels of KL(softmax(t/T) ‖ softmax(s/T))``; pixels labelled
    ``ignore_index`` are skipped (the mask is resized with nearest neighbour when the logits
    are smaller than it).

    ``source_exact=True`` reproduces the PSPNet knowledge-distillation repository instead:
    ``F.kl_div(log_softmax(s/T), softmax(t/T), reduction="mean") · T² · 19``, i.e. the KL summed
    over classes is divided by N·C·H·W (not N·H·W), multiplied by the constant 19, and ignore /
    padding pixels are NOT masked out. Its recipe also uses T = 1.9 and re-weights the task loss
    to 0.25·CE with a KD weight of 0.75 (set those in the config).

    Args:
        T: softmax temperature.
        weight: factor of the returned term.
        at: ``"out"`` (logits at input size, as the source repo) or ``"logits"`` (the
            classifier's output before upsampling: the same information, 64× fewer pixels).
        source_exact: reproduce the source repo's formula and its unmasked pixels.
        ignore_index: label of pixels that carry no supervision.

    Binary models (one output channel) use the per-pixel Bernoulli distribution sigmoid(z/T)
    instead of a softmax, the two-class case of the same loss (``kl_binary``), over all pixels.

    Input: ``student[at]`` / ``teacher[at]`` B×C×h×w, ``batch["mask"]`` B×H×W int64.
    Returns ``{"kd": weight · loss}``.
    """

    paper = (
        "Hinton et al., Distilling the Knowledge in a Neural Network, 2015; Liu et al., "
        "Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019 (pixel-wise)"
    )
    task = "any"

    def __init__(
        self,
        T: float = 4.0,
        weight: float = 1.0,
        at: str = "out",
        source_exact: bool = False,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        check_choice("at", at, ("out", "logits"))
        if T <= 0:
            raise ValueError(f"option 'T' must be > 0, got {T}")
        self.T = T
        self.weight = weight
        self.at = at
        self.source_exact = source_exact
        self.ignore_index = ignore_index
        taps = {} if at == "out" else {"logits": "logits"}
        self.student_taps = dict(taps)
        self.teacher_taps = dict(taps)

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        assert teacher is not None, "logits_kd needs a teacher"
        student_logits = student[self.at]
        teacher_logits = teacher[self.at].detach()
        with full_precision(student_logits):
            if student_logits.shape[1] == 1:
                loss = kl_binary(student_logits, teacher_logits, self.T)
            elif self.source_exact:
                loss = self._source_repo_loss(student_logits.float(), teacher_logits.float())
            else:
                labels = labels_at(batch["mask"], student_logits.shape[-2:])
                loss = kl_softmax(
                    student_logits, teacher_logits, self.T, valid=labels != self.ignore_index
                )
        return {"kd": self.weight * loss}

    def _source_repo_loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        """The source repo's formula, quirks included (mean over N·C·H·W, ×19, no ignore mask)."""
        t = self.T
        kl_sum = F.kl_div(
            F.log_softmax(student_logits / t, dim=1),
            F.softmax(teacher_logits / t, dim=1),
            reduction="sum",
        )
        # what F.kl_div(reduction="mean") gives: the sum over classes is averaged over classes too
        kl_mean_over_all_elements = kl_sum / student_logits.numel()
        return kl_mean_over_all_elements * t * t * SOURCE_REPO_CITYSCAPES_FACTOR
