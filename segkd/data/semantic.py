"""Semantic segmentation data: semseg list files and the VOC 2012 layout.

semseg list format: one ``image_relpath label_relpath`` pair per line, both relative to ROOT,
e.g. ``JPEGImages/2007_000032.jpg SegmentationClassAug/2007_000032.png``.

VOC layout::

    ROOT/JPEGImages/NAME.jpg
    ROOT/SegmentationClass/NAME.png      (or SegmentationClassAug/ with the SBD labels)
    ROOT/ImageSets/Segmentation/{split}.txt

Labels are PNGs of class indices (palette or grey); 255 marks pixels to ignore.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segkd.data.readers import (
    DataError,
    Listing,
    SamplePaths,
    check_label_values,
    check_same_size,
    read_image,
    read_label,
    read_list_lines,
)
from segkd.data.transforms import JointTransform, SoftMap, to_tv_tensors

PathPair = tuple[Path, Path]
# (sample index, image H×W) -> {key: C×H×W float maps at that size}, e.g. a teacher cache's reader
ExtraMaps = Callable[[int, tuple[int, int]], dict[str, torch.Tensor]]


def resolve_list_file(root: Path | str, list_file: Path | str) -> Path:
    """``ROOT/list_file``, or ``ROOT/list_file.txt`` when only that exists."""
    path = Path(root) / list_file
    with_txt = path.with_name(path.name + ".txt")
    return with_txt if not path.is_file() and with_txt.is_file() else path


def read_pair_list(root: Path | str, list_file: Path | str) -> list[PathPair]:
    """The ``(image_relpath, label_relpath)`` pairs of a semseg list file.

    Raises:
        DataError: the list file is missing or empty, or lines lack two paths (all such lines
            are named).
    """
    path = resolve_list_file(root, list_file)
    if not path.is_file() and not path.suffix:
        raise DataError(f"{path}: list file not found (also tried {path.name}.txt)")
    pairs: list[PathPair] = []
    bad_lines: list[str] = []
    for number, line in read_list_lines(path):
        fields = line.split()
        if len(fields) != 2:
            bad_lines.append(f"{path}:{number}: expected 'image_path label_path', got {line!r}")
        else:
            pairs.append((Path(fields[0]), Path(fields[1])))
    if bad_lines:
        raise DataError("\n".join(bad_lines))
    return pairs


def voc_pairs(root: Path | str, split: str, *, aug: bool = False) -> list[PathPair]:
    """The ``(image_relpath, label_relpath)`` pairs of a VOC split, relative to ``root``.

    Args:
        root: the VOC2012 folder (holding ``JPEGImages/``).
        split: name of ``ImageSets/Segmentation/{split}.txt``, e.g. ``"train"``, ``"val"``,
            ``"train_aug"``.
        aug: read labels from ``SegmentationClassAug/`` instead of ``SegmentationClass/``.

    Raises:
        DataError: the split file is missing or empty.
    """
    list_path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    label_dir = Path("SegmentationClassAug" if aug else "SegmentationClass")
    return [
        (Path("JPEGImages") / f"{name}.jpg", label_dir / f"{name}.png")
        for _, name in read_list_lines(list_path)
    ]


def resolve_pairs(root: Path | str, pairs: Sequence[tuple[Path | str, Path | str]]) -> Listing:
    """Turn relative pairs into samples; every missing image or label becomes a problem."""
    root = Path(root)
    listing = Listing()
    for image_rel, label_rel in pairs:
        image, label = root / image_rel, root / label_rel
        missing = [f"{path}: {what} file not found" for what, path in
                   (("image", image), ("label", label)) if not path.is_file()]
        if missing:
            listing.problems.extend(missing)
        else:
            listing.samples.append(SamplePaths(image.stem, image, label))
    return listing


def resize_long_side(image: np.ndarray, label: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an H×W×3 image (bilinear) and its H×W label (nearest) to a long side of ``side``."""
    height, width = label.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image, label
    resized = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    # PIL's 32-bit integer mode keeps every label value (uint8 would wrap labels above 255)
    resized_label = np.array(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST))
    return resized, resized_label.astype(label.dtype)


class SemanticSegDataset(Dataset[dict[str, Any]]):
    """Images and class-index label maps, given as pairs or as a semseg list file.

    Each item is ``{"image": float32 3×H×W, "mask": int64 H×W, "name": str}`` with mask values
    in [0, C) ∪ {ignore}.
    Without a transform the image holds raw 0-255 RGB values.

    Args:
        root: folder the pair paths are relative to.
        pairs: ``(image_relpath, label_relpath)`` pairs, e.g. from ``voc_pairs``.
        list_file: a semseg list file relative to ``root`` (give this or ``pairs``).
        num_classes: number of classes C; label values must lie in [0, C) or equal ignore_index.
        ignore_index: label value of pixels to ignore.
        transform: joint transform applied to ``(Image 3×H×W, Mask 1×H×W)``.
        long_side: when given, each image (bilinear) and label (nearest) is resized on reading so
            that its long side has this many pixels, before ``transform``.
        label_map: ``(label, path) -> train ids`` applied to each label file as read (the
            Cityscapes / ADE20K / CamVid layouts); it raises ``DataError`` on foreign values.
        extra_maps: per-pixel maps to carry with each sample (a teacher cache's logits): called
            with the sample's index and the image's H×W (after ``long_side``), it returns
            ``{key: C×H×W}``; each map goes through ``transform`` as a ``SoftMap`` (moved exactly
            as the image) and is returned under its key.

    Raises:
        DataError: at construction if a listed file is missing; at load time if a file is
            unreadable, sizes differ or a label holds invalid values.
    """

    def __init__(
        self,
        root: Path | str,
        pairs: Sequence[tuple[Path | str, Path | str]] | None = None,
        list_file: Path | str | None = None,
        *,
        num_classes: int,
        ignore_index: int = 255,
        transform: JointTransform | None = None,
        long_side: int | None = None,
        label_map: Callable[[np.ndarray, Path], np.ndarray] | None = None,
        extra_maps: ExtraMaps | None = None,
    ) -> None:
        if (pairs is None) == (list_file is None):
            raise ValueError("give exactly one of pairs and list_file")
        self.root = Path(root)
        if pairs is None:
            assert list_file is not None
            pairs = read_pair_list(self.root, list_file)
        listing = resolve_pairs(self.root, pairs)
        listing.raise_if_problems()
        self.samples = listing.samples
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform
        self.long_side = long_side
        self.label_map = label_map
        self.extra_maps = extra_maps

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image_array, label_array = read_image(sample.image), read_label(sample.mask)
        if self.label_map is not None:
            label_array = self.label_map(label_array, sample.mask)
        check_same_size(image_array, label_array, sample)
        check_label_values(label_array, self.num_classes, self.ignore_index, sample.mask)
        if self.long_side is not None:
            image_array, label_array = resize_long_side(image_array, label_array, self.long_side)
        image, mask = to_tv_tensors(image_array, label_array)
        extra = self.extra_maps(index, tuple(label_array.shape)) if self.extra_maps is not None else {}
        maps = [SoftMap(value) for value in extra.values()]
        if self.transform is not None:
            image, mask, *maps = self.transform(image, mask, *maps)
        return {
            "image": image.as_subclass(torch.Tensor),
            "mask": mask.as_subclass(torch.Tensor)[0].to(torch.int64),
            "name": sample.name,
            **{key: value.as_subclass(torch.Tensor) for key, value in zip(extra, maps)},
        }

    def __repr__(self) -> str:
        return f"SemanticSegDataset(root={str(self.root)!r}, n={len(self)})"
