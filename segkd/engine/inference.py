"""Turning a model's logits into full-resolution predictions, the way each community tests."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _forward_probs(model: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Softmax probabilities B×C×h×w of one window, averaged with the mirrored window if ``flip``."""
    probs = model(x)["out"].float().softmax(dim=1)
    if flip:
        probs = probs + model(x.flip(-1))["out"].float().softmax(dim=1).flip(-1)
        probs = probs / 2
    return probs


def sliding_window(model: nn.Module, image: torch.Tensor, crop: int, stride_rate: float, flip: bool) -> torch.Tensor:
    """semseg's sliding-window protocol on one normalised image 1×3×H×W → probabilities 1×C×H×W.

    The image is zero-padded (the mean, after normalisation) up to the crop size; windows of
    ``crop`` with stride ``ceil(crop·stride_rate)`` are averaged where they overlap.
    """
    _, _, h, w = image.shape
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    padded = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    ph, pw = padded.shape[-2:]
    stride = max(1, math.ceil(crop * stride_rate))
    rows = max(1, math.ceil((ph - crop) / stride) + 1)
    cols = max(1, math.ceil((pw - crop) / stride) + 1)
    probs: torch.Tensor | None = None
    counts = torch.zeros(1, 1, ph, pw, device=image.device)
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * stride, ph - crop)
            x0 = min(c * stride, pw - crop)
            window = padded[:, :, y0 : y0 + crop, x0 : x0 + crop]
            p = _forward_probs(model, window, flip)
            if probs is None:
                probs = torch.zeros(1, p.shape[1], ph, pw, device=image.device)
            probs[:, :, y0 : y0 + crop, x0 : x0 + crop] += p
            counts[:, :, y0 : y0 + crop, x0 : x0 + crop] += 1
    assert probs is not None
    probs = probs / counts
    return probs[:, :, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]


def predict_semantic(
    model: nn.Module,
    image: torch.Tensor,
    *,
    crop_size: int,
    base_size: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding: bool = True,
    stride_rate: float = 2 / 3,
) -> torch.Tensor:
    """Class probabilities 1×C×H×W for a full-resolution image 1×3×H×W.

    For each scale the long side is resized to ``scale·base_size``; predictions of all scales are
    resized back and averaged (semseg's single- and multi-scale test).
    """
    _, _, h, w = image.shape
    total: torch.Tensor | None = None
    for scale in scales:
        long_side = round(scale * base_size)
        nh, nw = (long_side, round(long_side * w / h)) if h >= w else (round(long_side * h / w), long_side)
        resized = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False)
        if sliding:
            probs = sliding_window(model, resized, crop_size, stride_rate, flip)
        else:
            probs = _forward_probs(model, resized, flip)
        probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(scales)


def predict_binary(model: nn.Module, image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Foreground probability B×1×H×W at ``out_size`` (the mask's size) for an image at test size."""
    logits = model(image)["out"].float()
    logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return torch.sigmoid(logits)


def to_uint8(prob: torch.Tensor) -> numpy.ndarray:  # noqa: F821
    """H×W probability → uint8 map, round(p·255), the SOD community's saved format."""
    return (prob.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
