"""Loss building blocks shared by the distillation methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_softmax(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise KL(p_teacher || p_student) of class distributions softened at ``temperature``.

    Args:
        student_logits, teacher_logits: B×C×H×W.
        valid: optional B×H×W bool mask; pixels where it is False (ignore label) are skipped.

    Returns the mean over counted pixels of ``sum_c p_t (log p_t - log p_s)``, times T² so the
    gradient scale does not shrink as T grows (Hinton et al. 2015).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    per_pixel = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # B×H×W
    if valid is not None:
        per_pixel = per_pixel[valid]
    if per_pixel.numel() == 0:
        return student_logits.sum() * 0.0
    return per_pixel.mean() * t * t


def kl_binary(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Pixel-wise KL between Bernoulli distributions p = sigmoid(z / T) (binary masks).

    ``p_t log(p_t/p_s) + (1-p_t) log((1-p_t)/(1-p_s))`` averaged over pixels, times T². This is the
    same as a two-way softmax over ``[0, z]``, so it is the binary case of :func:`kl_softmax`.
    Shapes: B×1×H×W (any shape works as long as both match).
    """
    t = temperature
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    p_t = torch.sigmoid(zt)
    # logsigmoid keeps the log terms finite when a probability saturates
    kl = p_t * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - p_t) * (
        F.logsigmoid(-zt) - F.logsigmoid(-zs)
    )
    return kl.mean() * t * t


def resize_like(x: torch.Tensor, ref: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resize B×C×h×w ``x`` to the spatial size of ``ref`` (no-op when it already matches)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=ref.shape[-2:], mode="nearest")
    return F.interpolate(x, size=ref.shape[-2:], mode=mode, align_corners=False)
