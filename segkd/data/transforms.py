"""Joint image/mask transforms for training and evaluation, built on torchvision v2.

Every transform takes and returns ``(image, mask)``: ``image`` a ``tv_tensors.Image`` float32
3×H×W holding 0-255 RGB values until ``Normalize``, ``mask`` a ``tv_tensors.Mask`` 1×H×W of
integers (class ids, or 0/1). Wrapping the mask as ``tv_tensors.Mask`` makes torchvision resample
it out of blur and normalisation and fills its borders separately. Resizing is done here rather
than by ``v2.Resize``: torchvision resizes masks with plain nearest neighbour, which samples source
pixel floor(i·scale) and so shifts labels by up to a pixel against the bilinear image; the
"nearest-exact" rule samples pixel centres and keeps them aligned. All randomness comes from
torch's global RNG, so ``torch.manual_seed`` makes a pipeline reproducible.

Further inputs after ``(image, mask)`` may be ``SoftMap``s (a cached teacher's logits, C×H×W at
the image's size): every geometric step moves them exactly as the image (bilinear), and the
photometric steps (blur, normalisation) leave them alone.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from segkd.data.config import DataConfig, Task

JointTransform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Tensor, Tensor]]
BILINEAR = v2.InterpolationMode.BILINEAR
NEAREST_EXACT = v2.InterpolationMode.NEAREST_EXACT
# OpenCV's sigma for a 5×5 kernel given sigma 0 (the semseg recipe): 0.3·((5−1)/2 − 1) + 0.8.
BLUR_SIGMA = 1.1


class SoftMap(tv_tensors.TVTensor):
    """C×H×W real-valued maps that move with the image: resized, rotated and cropped like it
    (bilinear), flipped, and padded with 0. Where the image is padded or rotated in from outside
    the mask holds the ignore label, so losses that skip ignore pixels skip those positions."""

    def __new__(cls, data: Any) -> SoftMap:
        return cls._to_tensor(data, dtype=None, device=None, requires_grad=None).as_subclass(cls)


def _soft(kernel: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run an image kernel on a ``SoftMap`` and wrap the result as one again."""

    def on_soft_map(inpt: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return tv_tensors.wrap(kernel(inpt.as_subclass(Tensor), *args, **kwargs), like=inpt)

    return on_soft_map


@TF.register_kernel(TF.resize, SoftMap)
def _resize_soft_map(inpt: Tensor, size: list[int] | None, interpolation: Any = BILINEAR,
                     max_size: int | None = None, antialias: bool | None = True) -> Tensor:
    return _soft(TF.resize_image)(inpt, size, interpolation=BILINEAR, max_size=max_size, antialias=antialias)


@TF.register_kernel(TF.rotate, SoftMap)
def _rotate_soft_map(inpt: Tensor, angle: float, interpolation: Any = BILINEAR, expand: bool = False,
                     center: list[float] | None = None, fill: Any = None) -> Tensor:
    # fill 0 (not None) takes the image's code path, which blends rim pixels with the fill
    return _soft(TF.rotate_image)(inpt, angle, interpolation=BILINEAR, expand=expand, center=center, fill=0.0)


@TF.register_kernel(TF.pad, SoftMap)
def _pad_soft_map(inpt: Tensor, padding: list[int], fill: Any = None, padding_mode: str = "constant") -> Tensor:
    return _soft(TF.pad_image)(inpt, padding, fill=None, padding_mode=padding_mode)


TF.register_kernel(TF.crop, SoftMap)(_soft(TF.crop_image))
TF.register_kernel(TF.horizontal_flip, SoftMap)(_soft(TF.horizontal_flip_image))


def to_tv_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """H×W×3 uint8 RGB and H×W integer mask -> float32 3×H×W ``Image`` and 1×H×W ``Mask``."""
    image_tensor = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32)
    return tv_tensors.Image(image_tensor), tv_tensors.Mask(torch.from_numpy(mask)[None])


def resize_pair(image: Tensor, mask: Tensor, size: list[int]) -> tuple[Tensor, Tensor]:
    """Resize to ``size`` = [H, W]: image bilinear, mask nearest-exact (pixel centres aligned)."""
    resized_mask = TF.resize(mask.as_subclass(Tensor), size, interpolation=NEAREST_EXACT)
    return TF.resize(image, size, interpolation=BILINEAR), tv_tensors.wrap(resized_mask, like=mask)


def _resize_all(image: Tensor, mask: Tensor, more: tuple[Tensor, ...], size: list[int]) -> tuple[Tensor, ...]:
    """``resize_pair``, and each further input (``SoftMap``) resized like the image."""
    return (*resize_pair(image, mask, size), *(TF.resize(m, size) for m in more))


class Resize:
    """Resize image and mask to ``size``×``size``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Tensor, mask: Tensor, *more: Tensor) -> tuple[Tensor, ...]:
        return _resize_all(image, mask, more, [self.size, self.size])

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomScale:
    """Resize by one factor drawn uniformly from ``scale_range`` (image bilinear, mask
    nearest-exact)."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        self.low, self.high = scale_range

    def __call__(self, image: Tensor, mask: Tensor, *more: Tensor) -> tuple[Tensor, ...]:
        factor = self.low + (self.high - self.low) * torch.rand(()).item()
        height, width = image.shape[-2:]
        size = [max(1, round(height * factor)), max(1, round(width * factor))]
        return _resize_all(image, mask, more, size)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range=({self.low}, {self.high}))"


class PadToSize:
    """Pad equally on both sides up to ``size``×``size`` where smaller (image with
    ``image_fill``, mask with ``mask_fill``); larger sides are left alone."""

    def __init__(self, size: int, image_fill: Sequence[float], mask_fill: int) -> None:
        self.size = size
        self.image_fill = list(image_fill)
        self.mask_fill = mask_fill

    def __call__(self, image: Tensor, mask: Tensor, *more: Tensor) -> tuple[Tensor, ...]:
        height, width = image.shape[-2:]
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        if pad_h == 0 and pad_w == 0:
            return (image, mask, *more)
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        return (
            TF.pad(image, padding, fill=self.image_fill),
            TF.pad(mask, padding, fill=self.mask_fill),
            *(TF.pad(m, padding) for m in more),
        )

    def __repr__(self) -> str:
        return f"PadToSize(size={self.size}, mask_fill={self.mask_fill})"


class RandomTrimCrop:
    """Crop away a random amount, up to ``fraction`` of the height and of the width, split at
    random between the two opposite sides (F3Net's training crop)."""

    def __init__(self, fraction: float = 1 / 8) -> None:
        self.fraction = fraction

    def __call__(self, image: Tensor, mask: Tensor, *more: Tensor) -> tuple[Tensor, ...]:
        height, width = image.shape[-2:]
        trim_h = int(torch.randint(int(height * self.fraction) + 1, ()))
        trim_w = int(torch.randint(int(width * self.fraction) + 1, ()))
        top = int(torch.randint(trim_h + 1, ()))
        left = int(torch.randint(trim_w + 1, ()))
        box = (top, left, height - trim_h, width - trim_w)
        return (TF.crop(image, *box), TF.crop(mask, *box), *(TF.crop(m, *box) for m in more))

    def __repr__(self) -> str:
        return f"RandomTrimCrop(fraction={self.fraction})"


class ResizeImage:
    """Resize the image to ``size``×``size`` and keep the mask at full resolution (evaluation)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return TF.resize(image, [self.size, self.size], interpolation=BILINEAR), mask

    def __repr__(self) -> str:
        return f"ResizeImage(size={self.size})"


def resize_batch(batch: dict[str, Any], side: int) -> dict[str, Any]:
    """Resize a collated batch to side×side: images bilinear, masks nearest-exact (values kept)."""
    size = (side, side)
    if tuple(batch["image"].shape[-2:]) == size:
        return batch
    batch = dict(batch)
    batch["image"] = F.interpolate(batch["image"], size=size, mode="bilinear", align_corners=False)
    mask = batch["mask"]
    # Semantic masks are B×H×W; interpolate needs a channel axis and a float dtype.
    as_channels = mask if mask.dim() == 4 else mask[:, None]
    resized = F.interpolate(as_channels.float(), size=size, mode="nearest-exact").to(mask.dtype)
    batch["mask"] = resized if mask.dim() == 4 else resized[:, 0]
    return batch


def build_train_transform(task: Task, cfg: DataConfig) -> v2.Compose:
    """Training pipeline for ``task``.

    semantic (semseg): random scale -> rotate (p 0.5; image border = mean, label border = ignore)
        -> Gaussian blur 5×5 (p 0.5) -> h-flip (p 0.5) -> pad to the crop size -> random crop
        -> normalise. Output: image 3×crop×crop, mask 1×crop×crop.
    binary (F3Net): random trim crop (up to 1/8 per side) -> h-flip -> resize to train_size
        -> normalise. Output: image 3×S×S, mask 1×S×S; the trainer rescales each batch (``resize_batch``).
    """
    mean, std = cfg.normalization(task)
    flip = [v2.RandomHorizontalFlip(p=0.5)] if cfg.flip else []
    if task == "binary":
        return v2.Compose(
            [
                RandomTrimCrop(1 / 8),
                *flip,
                Resize(cfg.train_size),
                v2.Normalize(mean, std),
            ]
        )
    steps: list[Callable[..., Any]] = [RandomScale(cfg.scale_range)]
    if cfg.rotate != (0.0, 0.0):
        rotation = v2.RandomRotation(
            cfg.rotate,
            interpolation=BILINEAR,
            fill={tv_tensors.Image: list(mean), tv_tensors.Mask: cfg.ignore_index},
        )
        steps.append(v2.RandomApply([rotation], p=0.5))
    if cfg.blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(BLUR_SIGMA, BLUR_SIGMA))], p=0.5))
    steps += flip
    steps += [
        PadToSize(cfg.crop_size, image_fill=mean, mask_fill=cfg.ignore_index),
        v2.RandomCrop(cfg.crop_size),
        v2.Normalize(mean, std),
    ]
    return v2.Compose(steps)


def build_eval_transform(task: Task, cfg: DataConfig) -> v2.Compose:
    """Evaluation pipeline: the mask always stays at full resolution.

    semantic: normalise only (the evaluator resizes and slides windows itself).
    binary: image resized to test_size×test_size, then normalised.
    """
    mean, std = cfg.normalization(task)
    steps: list[Callable[..., Any]] = [ResizeImage(cfg.test_size)] if task == "binary" else []
    return v2.Compose([*steps, v2.Normalize(mean, std)])
