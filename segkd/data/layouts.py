"""Folder layouts of Cityscapes, ADE20K and CamVid, and how their label files become train ids.

Cityscapes (``data.layout: cityscapes``)::

    ROOT/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{name}_gtFine_labelIds.png      (34 ids -> 19 train ids, 255 elsewhere)
    ROOT/gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png  (read as is when present)

ADE20K (``ade20k``; SceneParsing ``ADEChallengeData2016``)::

    ROOT/images/{training,validation}/{name}.jpg
    ROOT/annotations/{training,validation}/{name}.png            (0 -> 255, k -> k - 1: 150 classes)

CamVid (``camvid``; the SegNet release)::

    ROOT/{train,val,test}/{name}.png
    ROOT/{train,val,test}annot/{name}.png                        (0..10 classes, 11 void -> 255)

Split names: ``train`` / ``val`` (and ``test`` for Cityscapes and CamVid); ADE20K's
``training`` / ``validation`` folders are found from either name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkd.data.classes import (
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CAMVID_VOID,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
)
from segkd.data.readers import IMAGE_SUFFIXES, DataError

PathPair = tuple[Path, Path]
LabelMap = Callable[[np.ndarray, Path], np.ndarray]

IGNORE = 255


def _table(size: int, pairs: dict[int, int]) -> np.ndarray:
    """A raw value -> train id table of ``size`` entries; raw values not in ``pairs`` map to 255."""
    table = np.full(size, IGNORE, dtype=np.int64)
    for raw, train_id in pairs.items():
        table[raw] = train_id
    return table


CITYSCAPES_TABLE = _table(34, {raw: i for i, raw in enumerate(CITYSCAPES_LABEL_IDS)})
ADE20K_TABLE = _table(151, {raw: raw - 1 for raw in range(1, 151)})
CAMVID_TABLE = _table(12, {raw: raw for raw in range(CAMVID_VOID)})


def apply_table(label: np.ndarray, table: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``table[label]`` as uint8; a raw value beyond the table is a ``DataError`` naming it."""
    bad = np.unique(label[(label < 0) | (label >= len(table))])
    if bad.size:
        raise DataError(
            f"{path}: label values {[int(v) for v in bad]} are not {what} "
            f"(expected 0..{len(table) - 1})"
        )
    return table[label].astype(np.uint8)


def cityscapes_label_map(label: np.ndarray, path: Path) -> np.ndarray:
    """``*_labelIds.png`` -> train ids; ``*_labelTrainIds.png`` (already train ids) unchanged."""
    if path.name.endswith("_labelTrainIds.png"):
        return label
    return apply_table(label, CITYSCAPES_TABLE, path, "Cityscapes labelIds")


def ade20k_label_map(label: np.ndarray, path: Path) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 ("other") -> 255, 1..150 -> 0..149."""
    return apply_table(label, ADE20K_TABLE, path, "ADE20K labels")


def camvid_label_map(label: np.ndarray, path: Path) -> np.ndarray:
    """0..10 kept, 11 (void / Unlabelled) -> 255."""
    return apply_table(label, CAMVID_TABLE, path, "CamVid (SegNet) labels")


def _images(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.rglob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{folder}: no images matching '{pattern}'")
    return images


def cityscapes_pairs(root: Path, split: str) -> list[PathPair]:
    pairs = []
    for image in _images(root / "leftImg8bit" / split, "*_leftImg8bit.png"):
        rel = image.relative_to(root / "leftImg8bit")
        stem = rel.name[: -len("_leftImg8bit.png")]
        label_dir = Path("gtFine") / rel.parent
        train_ids = label_dir / f"{stem}_gtFine_labelTrainIds.png"
        label = train_ids if (root / train_ids).is_file() else label_dir / f"{stem}_gtFine_labelIds.png"
        pairs.append((image.relative_to(root), label))
    return pairs


_ADE20K_SPLITS = {"train": "training", "val": "validation"}


def ade20k_pairs(root: Path, split: str) -> list[PathPair]:
    folder = _ADE20K_SPLITS.get(split, split)
    return [
        (image.relative_to(root), Path("annotations") / image.relative_to(root / "images").with_suffix(".png"))
        for image in _images(root / "images" / folder, "*")
    ]


def camvid_pairs(root: Path, split: str) -> list[PathPair]:
    return [
        (image.relative_to(root), Path(f"{split}annot") / image.relative_to(root / split).with_suffix(".png"))
        for image in _images(root / split, "*")
    ]


@dataclass(frozen=True)
class Layout:
    """What segkd knows about one public data set's folders and labels."""

    class_names: tuple[str, ...]
    pairs: Callable[[Path, str], list[PathPair]]
    label_map: LabelMap


LAYOUTS: dict[str, Layout] = {
    "cityscapes": Layout(CITYSCAPES_CLASSES, cityscapes_pairs, cityscapes_label_map),
    "ade20k": Layout(ADE20K_CLASSES, ade20k_pairs, ade20k_label_map),
    "camvid": Layout(CAMVID_CLASSES, camvid_pairs, camvid_label_map),
}
