"""Loss building blocks shared by the distillation methods."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F

from segkd.models.base import resize_to
from segkd.models.losses import structure_loss


def kl_softmax(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               valid: torch.Tensor | None = None) -> torch.Tensor:
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


def kl_binary(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Pixel-wise KL between Bernoulli distributions p = sigmoid(z / T) (binary masks).

    ``p_t log(p_t/p_s) + (1-p_t) log((1-p_t)/(1-p_s))`` averaged over pixels, times T². This is the
    same as a two-way softmax over ``[0, z]``, so it is the binary case of :func:`kl_softmax`.
    Shapes: B×1×H×W (any shape works as long as both match).
    """
    t = temperature
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    p_t = torch.sigmoid(zt)
    # logsigmoid keeps the log terms finite when a probability saturates
    kl = p_t * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - p_t) * (F.logsigmoid(-zt) - F.logsigmoid(-zs))
    return kl.mean() * t * t


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of B×C×h×w ``x`` to the spatial size of ``ref`` (no-op when it already matches)."""
    return resize_to(x, ref.shape[-2:], align_corners=False)


# --- several heads and taps ---


def mutual_kl_binary(logits: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Sum over every ordered pair ``i ≠ j`` of ``kl_binary(logits[i], logits[j].detach(), T)``.

    Each prediction learns from every other one, whose probabilities are the (detached) target,
    so each pair is mimicked in both directions. Shapes: a list of equal-shape B×1×H×W logits.
    """
    targets = [z.detach() for z in logits]
    terms = [kl_binary(z, targets[j], temperature)
             for i, z in enumerate(logits) for j in range(len(logits)) if i != j]
    return torch.stack(terms).sum()


def deep_supervision(logits: Iterable[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Sum of the binary task (structure) loss of every auxiliary head's B×1×H×W logits."""
    return torch.stack([structure_loss(z, mask) for z in logits]).sum()


def require_shapes(
    shapes: Mapping[str, torch.Size], names: Iterable[str], method: str
) -> None:
    """Raise a ``KeyError`` naming the method and tap when ``setup`` got no shape for a tap."""
    missing = [n for n in names if n not in shapes]
    if missing:
        raise KeyError(
            f"method '{method}': setup got no shape for tap(s) {missing}; got {sorted(shapes)}"
        )


# --- teacher-student helpers ---


def check_choice(option: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise a ``ValueError`` naming ``option`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"option '{option}' must be one of {list(choices)}, got {value!r}")


def tap_channels(
    shapes: Mapping[str, torch.Size], key: str, side: str, method: str
) -> int:
    """Channel count (dim 1) of the captured tensor ``key``; a clear error when it is missing."""
    if key not in shapes:
        raise KeyError(
            f"method '{method}': {side} shapes have no entry '{key}'; captured: {sorted(shapes)}"
        )
    return int(shapes[key][1])


def labels_at(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Resize a B×H×W int64 label map to ``size`` with nearest neighbour (labels never blend)."""
    if mask.shape[-2:] == tuple(size):
        return mask
    resized = F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()


def full_precision(reference: torch.Tensor) -> torch.autocast:
    """Context that turns autocast off on ``reference``'s device, so a loss is computed in float32.

    Matrix products inside an autocast region run in half precision even on float32 inputs;
    similarity matrices and softmaxes over thousands of entries need the full range.
    """
    return torch.autocast(device_type=reference.device.type, enabled=False)


def kl_rows(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) ‖ softmax(student)) along the last dim: ...×K scores → ... values.

    The building block of the relational losses (channel-wise, pixel-to-pixel, memory).
    """
    log_p_s = F.log_softmax(student_scores, dim=-1)
    log_p_t = F.log_softmax(teacher_scores, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)


def attention_transfer(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AT loss of one level (Zagoruyko & Komodakis): mean squared difference of L2-normalised
    spatial attention maps.

    The attention map of B×C×h×w features is ``mean_c(f²)`` flattened per sample and
    L2-normalised; channel counts may differ. ``target``'s map is resized (bilinear) to the
    student's h×w when they differ. Returns the mean over B×h·w.
    """
    a_s = student.float().pow(2).mean(dim=1, keepdim=True)
    a_t = resize_like(target.float().pow(2).mean(dim=1, keepdim=True), a_s)
    return (F.normalize(a_s.flatten(1), dim=1) - F.normalize(a_t.flatten(1), dim=1)).pow(2).mean()
