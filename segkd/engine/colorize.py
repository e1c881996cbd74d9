"""Colour helpers for semantic label maps: saved predictions, TensorBoard images and figures."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segkd.data.classes import voc_palette

IGNORE_LABEL = 255


def colorize_labels(label: np.ndarray, num_classes: int, palette: Sequence[int] | None = None) -> np.ndarray:
    """H×W class indices in [0, num_classes) ∪ {255} → H×W×3 uint8 colours of ``palette``.

    ``palette`` is a flat ``[r0, g0, b0, r1, ...]`` list of 256 colours, as
    ``segkd.data.classes.layout_palette(layout)`` gives for a data set; default: VOC's.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be H×W, got shape {label.shape}")
    if not 1 <= num_classes <= IGNORE_LABEL:
        raise ValueError(f"num_classes must be in [1, {IGNORE_LABEL}], got {num_classes}")
    valid = (label >= 0) & ((label < num_classes) | (label == IGNORE_LABEL))
    if not valid.all():
        bad = np.unique(label[~valid])[:5].tolist()
        raise ValueError(f"label values {bad} are outside [0, {num_classes}) and not {IGNORE_LABEL}")
    palette = voc_palette() if palette is None else palette
    if len(palette) != 768:
        raise ValueError(f"palette must list 256 colours as 768 values [r0, g0, b0, ...], got {len(palette)} values")
    colours = np.asarray(palette, dtype=np.uint8).reshape(256, 3)
    return colours[label.astype(np.int64)]


def overlay(image: np.ndarray, color_label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend H×W×3 uint8 colours over an H×W×3 uint8 image: ``(1 − alpha)·image + alpha·colours``."""
    image, color_label = np.asarray(image), np.asarray(color_label)
    if image.shape != color_label.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image and color_label must both be H×W×3, got {image.shape} and {color_label.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * color_label.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
