"""Pixel-wise logits distillation: each pixel's class distribution follows the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import check_choice, full_precision, kl_binary, kl_softmax, labels_at, resize_like
from segkd.distill.options import check_temperature

# The source repo multiplies its KD loss by 19, a class count copied from a Cityscapes code base;
# it is kept only for the ``source_exact`` reproduction and does not follow the data set.
SOURCE_REPO_CITYSCAPES_FACTOR = 19


@register_method("logits_kd")
class LogitsKD(DistillMethod):
    """Pixel-wise KD (Hinton et al. 2015; the pixel-wise term of Liu et al., CVPR 2019).

    ``loss = T² · mean over labelled pixels of KL(softmax(t/T) ‖ softmax(s/T))``; pixels labelled
    with the data's ignore index (``data.ignore_index``, set by the trainer) are skipped, the
    mask being resized with nearest neighbour to the logits' size (and a student's logits
    bilinearly to the teacher's when their output strides differ).

    ``mask_ignore=False`` averages over every pixel instead, as the KD of the CIRKD benchmark code
    (``CriterionKD``: CIRKD, Af-DCD), SKD's pixel-wise term and IFVD's do: none of them masks
    the ignore label (SKD's also sums over the batch and IFVD's divides by the class count).

    Defaults follow the segmentation references (SKD's pixel-wise term, CIRKD's and its
    successors' KD baseline): T = 1 on the classifier's logits before upsampling (feature point
    ``logits``, 1/8 of the input at output stride 8). ``at="out"`` distils the logits upsampled to
    the input size instead (the PSPNet knowledge-distillation repository); other T are options.

    ``standardize=True`` is the logit standardization of Sun et al. ("Logit Standardization in
    Knowledge Distillation", CVPR 2024): each pixel's logit vector, student's and teacher's
    separately, is z-scored over classes, ``(z − mean_c z) / (std_c z + 1e-7)`` with the unbiased
    std as the authors' code, before the softmax at T (then the paper's base temperature).
    Binary (one-channel) logits have no class vector to standardise: an error says so.

    ``source_exact=True`` reproduces the PSPNet knowledge-distillation repository instead:
    ``F.kl_div(log_softmax(s/T), softmax(t/T), reduction="mean") · T² · 19``, i.e. the KL summed
    over classes is divided by N·C·H·W (not N·H·W), multiplied by the constant 19, and ignore /
    padding pixels are NOT masked out, on the logits at input size (``at`` defaults to ``"out"``
    then). Its recipe also uses T = 1.9 and re-weights the task loss to 0.25·CE with a KD weight
    of 0.75 (set those in the config).

    Args:
        temperature: softmax temperature T (formerly ``T``).
        weight: factor of the returned term.
        at: ``"logits"`` (the classifier's output before upsampling) or ``"out"`` (input size);
            unset: ``"logits"``, or ``"out"`` with ``source_exact`` (where the source distils) or
            when a model names no ``logits`` feature point (a user's own network).
        source_exact: reproduce the source repo's formula and its unmasked pixels.
        standardize: z-score each pixel's logits over classes first (Sun et al., CVPR 2024).
        mask_ignore: skip pixels labelled ``data.ignore_index`` (False: the references' mean over all).

    Binary models (one output channel) use the per-pixel Bernoulli distribution sigmoid(z/T)
    instead of a softmax, the two-class case of the same loss (``kl_binary``), over all pixels.

    Input: ``student[at]`` / ``teacher[at]`` B×C×h×w, ``batch["mask"]`` B×H×W int64.
    Returns ``{"kd": weight · loss}``.
    """

    paper = (
        "Hinton et al., Distilling the Knowledge in a Neural Network, 2015; Liu et al., "
        "Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019 (pixel-wise); "
        "option standardize: Sun et al., Logit Standardization in Knowledge Distillation, CVPR 2024"
    )
    task = "any"
    terms = {"kd": "T²·KL(teacher ‖ student) of each labelled pixel's class distribution"}
    renamed_options = {"T": "temperature"}

    def __init__(
        self,
        temperature: float = 1.0,
        weight: float = 1.0,
        at: str | None = None,
        source_exact: bool = False,
        standardize: bool = False,
        mask_ignore: bool = True,
    ) -> None:
        super().__init__()
        self.at_given = at is not None
        at = at or ("out" if source_exact else "logits")  # the source repo distils at "out"
        check_choice("at", at, ("out", "logits"))
        if standardize and source_exact:
            raise ValueError("options 'standardize' and 'source_exact' exclude each other: "
                             "the source repo's formula has no standardisation")
        self.temperature = check_temperature(temperature, self.name)
        self.weight = weight
        self.source_exact = source_exact
        self.standardize = standardize
        self.mask_ignore = mask_ignore
        self._place(at)

    def _place(self, at: str) -> None:
        self.at = at
        taps = {} if at == "out" else {"logits": "logits"}
        self.student_taps = dict(taps)
        self.teacher_taps = dict(taps)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """``at`` unset and a model without a ``logits`` feature point (a user's own network):
        distil its output ``out`` instead, so any pair of models can be distilled."""
        if not self.at_given and self.at == "logits" and not all(
            "logits" in getattr(m, "feature_points", {}) for m in (student, teacher) if m is not None
        ):
            self._place("out")

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert teacher is not None, "logits_kd needs a teacher"
        # a student at another output stride than the teacher is compared at the teacher's size
        student_logits = resize_like(student[self.at], teacher[self.at])
        teacher_logits = teacher[self.at].detach()
        with full_precision(student_logits):
            if self.standardize:
                if student_logits.shape[1] == 1:
                    raise ValueError("logits_kd: standardize=True needs class logits (C > 1); "
                                     "a one-channel binary output has no class vector to z-score")
                student_logits = standardize_logits(student_logits.float())
                teacher_logits = standardize_logits(teacher_logits.float())
            if student_logits.shape[1] == 1:
                loss = kl_binary(student_logits, teacher_logits, self.temperature)
            elif self.source_exact:
                loss = self._source_repo_loss(student_logits.float(), teacher_logits.float())
            else:
                labels = labels_at(batch["mask"], student_logits.shape[-2:])
                valid = labels != self.ignore_index if self.mask_ignore else None
                loss = kl_softmax(student_logits, teacher_logits, self.temperature, valid=valid)
        return {"kd": self.weight * loss}

    def _source_repo_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The source repo's formula, quirks included (mean over N·C·H·W, ×19, no ignore mask)."""
        t = self.temperature
        log_p_s, p_t = F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1)
        # F.kl_div(reduction="mean"): the KL summed over classes is averaged over classes too
        kl_mean_over_all_elements = F.kl_div(log_p_s, p_t, reduction="sum") / student_logits.numel()
        return kl_mean_over_all_elements * t * t * SOURCE_REPO_CITYSCAPES_FACTOR


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score B×C×h×w logits over the class dim (unbiased std, as Sun et al.'s code)."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)
