"""Supervised task losses: cross-entropy for semantic segmentation, structure loss for binary."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted BCE + weighted IoU (F3Net), the usual loss of binary object segmentation.

    Pixels near object boundaries get more weight: ``w = 1 + 5·|avgpool31(mask) − mask|``.
    Unlike the F3Net code (whose ``reduce='none'`` is read by PyTorch as a plain mean), the BCE
    here is weighted as the paper describes.

    Args:
        logits: B×1×H×W raw scores.
        mask: B×1×H×W in {0, 1}; resized (nearest) when its size differs from ``logits``.
    """
    mask = mask.float()
    if mask.shape[-2:] != logits.shape[-2:]:
        mask = F.interpolate(mask, size=logits.shape[-2:], mode="nearest")
    logits = logits.float()
    weight = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * mask * weight).sum(dim=(2, 3))
    union = ((prob + mask) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def semantic_ce(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignore label skipped. logits B×C×H×W, mask B×H×W int64."""
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), mask, ignore_index=ignore_index)


def task_loss(logits: torch.Tensor, mask: torch.Tensor, task: str, ignore_index: int = 255) -> torch.Tensor:
    """The supervised loss of one prediction map for ``task`` ("semantic" or "binary")."""
    if task == "binary":
        return structure_loss(logits, mask)
    return semantic_ce(logits, mask, ignore_index)
