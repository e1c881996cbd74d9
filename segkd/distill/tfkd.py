"""Tf-KD: teacher-free knowledge distillation (Yuan et al., CVPR 2020), for binary masks."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import check_choice, kl_binary
from segkd.distill.options import check_temperature

MODES = ("self", "reg")
# mode -> (kd_share, temperature); "reg" keeps the paper's α but not its T (see the class docstring)
MODE_DEFAULTS = {"self": (0.95, 6.0), "reg": (0.1, 2.0)}


def virtual_teacher_logits(
    mask: torch.Tensor, correct_prob: float, temperature: float
) -> torch.Tensor:
    """Logits of the softened virtual teacher, B×1×H×W, from a B×1×H×W mask in {0, 1}.

    The teacher puts ``a = correct_prob`` on the true class and ``1 − a`` on the other, i.e.
    logit ``±log(a / (1 − a))`` (sign from the mask); softening by T divides it by T, so
    ``σ(logit) = a^(1/T) / (a^(1/T) + (1 − a)^(1/T))``.
    """
    margin = math.log(correct_prob / (1 - correct_prob)) / temperature
    return (2 * mask.float() - 1) * margin


@register_method("tfkd")
class TfKD(DistillMethod):
    """Teacher-free KD in its two forms (``mode``); the softened prediction is a per-pixel
    Bernoulli σ(z/T) and KL is ``kl_binary``.

    ``mode="self"`` (Tf-KD self): the teacher is a previously trained copy of the same network
    (give it as the config's teacher; ``needs_teacher`` is True only in this mode)::

        kd = α·T²·KL(σ(z_t/T) ‖ σ(z_s/T))        (z_t detached; α: ``kd_share``)

    Defaults α = 0.95, T = 6 are the paper's classification values, kept as is.

    ``mode="reg"`` (Tf-KD reg): a virtual teacher per pixel with probability ``correct_prob``
    (a = 0.99) on the true class, softened by T (:func:`virtual_teacher_logits`)::

        reg = α·KL(p_t ‖ σ(z_s)),   p_t = σ(±log(a/(1−a)) / T)

    As in the paper's code the student is not softened and there is no T²: the term is then
    minimal at σ(z_s) = p_t, i.e. it smooths the labels to p_t. (Softening both sides would
    move the minimum back to σ(z_s) = a whatever T.) The paper's T = 20 is meant for 100
    classes; with two it gives p_t = σ(4.595/20) = 0.557 (0.512 in the paper's code, which
    divides the probabilities themselves by T), almost no signal. T = 2 gives
    p_t = √0.99 / (√0.99 + √0.01) = 0.909 ≈ 0.9, the usual label-smoothing strength, so it is
    the binary default. α = 0.1 is the paper's.

    In both modes the paper's loss is ``(1 − α)·task + α·…``: set the task-loss weight to
    ``1 − kd_share`` in the config's ``loss:`` section; this method returns only its own term,
    ``{"kd"}`` (self) or ``{"reg"}`` (reg), weighted by α.

    KL scale versus the official code: it uses ``nn.KLDivLoss()`` with its default element-wise
    mean, which divides the per-sample KL by the class count K, and multiplies by a
    ``multiplier`` option (self: × T² × multiplier, "1.0 in most cases, some 10 or 50"; reg:
    × multiplier, no T²). segkd sums the KL over the two classes of each pixel and averages over
    pixels: the official scale with multiplier = K = 2. To rerun a recipe with another
    multiplier m, scale ``kd_share`` by m / 2.
    """

    paper = (
        "Yuan et al., Revisiting Knowledge Distillation via Label Smoothing Regularization, "
        "CVPR 2020"
    )
    kind = "self"
    task = "binary"
    terms = {
        "kd": "mode self: kd_share · T² · Bernoulli KL(teacher out detached ‖ out) at T",
        "reg": "mode reg: kd_share · Bernoulli KL(virtual teacher ‖ σ(out)), no T²",
    }
    renamed_options = {"alpha": "kd_share"}

    def __init__(
        self,
        mode: str = "self",
        kd_share: float | None = None,
        temperature: float | None = None,
        correct_prob: float = 0.99,
    ) -> None:
        """``kd_share`` / ``temperature`` left as None take the mode's default (see the class doc)."""
        super().__init__()
        check_choice("mode", mode, MODES)
        default_share, default_temperature = MODE_DEFAULTS[mode]
        self.mode = mode
        self.kd_share = default_share if kd_share is None else kd_share
        self.temperature = check_temperature(default_temperature if temperature is None else temperature, self.name)
        if not 0.5 < correct_prob < 1:
            raise ValueError(f"option 'correct_prob' must be in (0.5, 1), got {correct_prob!r}")
        self.correct_prob = correct_prob

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        """Only Tf-KD self needs a (pre-trained) teacher."""
        return self.mode == "self"

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``student["out"]``, ``teacher["out"]`` (self mode) and ``batch["mask"]``: B×1×H×W."""
        out = student["out"]
        if self.mode == "self":
            if teacher is None:
                raise ValueError(
                    "method 'tfkd' with mode='self' needs a teacher model in the config"
                )
            return {"kd": self.kd_share * kl_binary(out, teacher["out"].detach(), self.temperature)}
        mask = batch["mask"]
        if mask.shape[-2:] != out.shape[-2:]:
            mask = F.interpolate(mask.float(), size=out.shape[-2:], mode="nearest")
        target = virtual_teacher_logits(mask, self.correct_prob, self.temperature)
        return {"reg": self.kd_share * kl_binary(out, target, temperature=1.0)}
