from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.data import (
    BinarySegDataset,
    DataConfig,
    DataError,
    SemanticSegDataset,
    check_data,
    voc_pairs,
)
from segkd.data.checks import DataError as ChecksDataError


def _binary_copy(shared_data: Path, tmp_path: Path, count: int = 4) -> tuple[Path, list[str]]:
    """A small SOD-layout copy of sod300 with ``count`` names in train.txt and test.txt."""
    source, root = shared_data / "sod300", tmp_path / "sod"
    names = (source / "train.txt").read_text().split()[:count]
    (root / "Image").mkdir(parents=True)
    (root / "Mask").mkdir()
    for name in names:
        shutil.copy(source / "Image" / f"{name}.jpg", root / "Image")
        shutil.copy(source / "Mask" / f"{name}.png", root / "Mask")
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root, names


def _voc_copy(shared_data: Path, tmp_path: Path, count: int = 3) -> tuple[Path, list[str]]:
    source, root = shared_data / "voc_samples", tmp_path / "voc"
    names = (source / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:count]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name in names:
        shutil.copy(source / "JPEGImages" / f"{name}.jpg", root / "JPEGImages")
        shutil.copy(source / "SegmentationClass" / f"{name}.png", root / "SegmentationClass")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root, names


def _binary_cfg(root: Path) -> DataConfig:
    return DataConfig(layout="binary", root=root)


def test_data_error_is_exported_by_checks() -> None:
    assert ChecksDataError is DataError and issubclass(DataError, Exception)


def test_clean_copies_have_no_problems(shared_data: Path, tmp_path: Path) -> None:
    binary_root, _ = _binary_copy(shared_data, tmp_path)
    voc_root, _ = _voc_copy(shared_data, tmp_path)
    assert check_data(_binary_cfg(binary_root), "binary") == []
    assert check_data(DataConfig(layout="voc", root=voc_root), "semantic", ["val"]) == []


def test_missing_mask(shared_data: Path, tmp_path: Path) -> None:
    root, names = _binary_copy(shared_data, tmp_path)
    (root / "Mask" / f"{names[1]}.png").unlink()
    problems = check_data(_binary_cfg(root), "binary", ["train"])
    assert problems == [
        f"{root / 'Mask' / names[1]}.png: no mask for '{names[1]}' listed in {root / 'train'}.txt"
    ]
    with pytest.raises(DataError, match=f"no mask for '{names[1]}'"):
        BinarySegDataset(root, "train")


def test_missing_image(shared_data: Path, tmp_path: Path) -> None:
    root, names = _binary_copy(shared_data, tmp_path)
    (root / "Image" / f"{names[0]}.jpg").unlink()
    problems = check_data(_binary_cfg(root), "binary", ["train"])
    assert len(problems) == 1 and f"no image for '{names[0]}'" in problems[0]
    assert problems[0].startswith(str(root / "Image" / names[0]))


def test_size_mismatch(shared_data: Path, tmp_path: Path) -> None:
    root, names = _binary_copy(shared_data, tmp_path)
    mask_path = root / "Mask" / f"{names[2]}.png"
    Image.open(mask_path).resize((40, 30)).save(mask_path)
    problems = check_data(_binary_cfg(root), "binary", ["train"])
    assert len(problems) == 1
    assert problems[0].startswith(f"{mask_path}: mask size 30×40 differs from image")
    dataset = BinarySegDataset(root, "train")
    with pytest.raises(DataError, match="mask size 30×40 differs"):
        dataset[2]


def test_unreadable_and_truncated_files(shared_data: Path, tmp_path: Path) -> None:
    root, names = _binary_copy(shared_data, tmp_path)
    garbage = root / "Image" / f"{names[0]}.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    truncated = root / "Mask" / f"{names[3]}.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    problems = check_data(_binary_cfg(root), "binary", ["train"])
    assert len(problems) == 2
    assert problems[0].startswith(f"{garbage}: cannot read image")
    assert problems[1].startswith(f"{truncated}: cannot read mask")
    dataset = BinarySegDataset(root, "train")
    with pytest.raises(DataError, match="cannot read image"):
        dataset[0]


def test_empty_and_missing_list_files(shared_data: Path, tmp_path: Path) -> None:
    root, _ = _binary_copy(shared_data, tmp_path)
    (root / "train.txt").write_text("\n  \n")
    (root / "test.txt").unlink()
    problems = check_data(_binary_cfg(root), "binary")
    assert problems == [
        f"{root / 'train.txt'}: list file is empty",
        f"{root / 'test.txt'}: list file not found",
    ]
    with pytest.raises(DataError, match="list file is empty"):
        BinarySegDataset(root, "train")


def test_label_values_out_of_range(shared_data: Path, tmp_path: Path) -> None:
    root, names = _voc_copy(shared_data, tmp_path)
    label_path = root / "SegmentationClass" / f"{names[1]}.png"
    label = Image.open(label_path)
    values = np.array(label)
    values[:2, :2] = 30
    values[-1, -1] = 21
    broken = Image.fromarray(values)
    broken.putpalette(label.getpalette() or [])
    broken.save(label_path)
    cfg = DataConfig(layout="voc", root=root)
    problems = check_data(cfg, "semantic", ["val"])
    assert problems == [
        f"{label_path}: label values [21, 30] outside [0, 21) and not the ignore index 255"
    ]
    dataset = SemanticSegDataset(root, pairs=voc_pairs(root, "val"), num_classes=21)
    with pytest.raises(DataError, match=r"label values \[21, 30\]"):
        dataset[1]


def test_semantic_missing_label_and_malformed_list(shared_data: Path, tmp_path: Path) -> None:
    root, names = _voc_copy(shared_data, tmp_path)
    (root / "SegmentationClass" / f"{names[0]}.png").unlink()
    with pytest.raises(DataError, match=f"{names[0]}.png: label file not found"):
        SemanticSegDataset(root, pairs=voc_pairs(root, "val"), num_classes=21)
    (root / "list.txt").write_text(f"JPEGImages/{names[1]}.jpg\nA B C\n")
    cfg = DataConfig(layout="semseg_list", root=root, val_split="list")
    problems = check_data(cfg, "semantic", ["val"])
    assert problems == [
        f"{root / 'list.txt'}:1: expected 'image_path label_path', got 'JPEGImages/{names[1]}.jpg'",
        f"{root / 'list.txt'}:2: expected 'image_path label_path', got 'A B C'",
    ]


def test_several_problems_reported_at_once(shared_data: Path, tmp_path: Path) -> None:
    root, names = _binary_copy(shared_data, tmp_path, count=5)
    (root / "Mask" / f"{names[0]}.png").unlink()
    (root / "Image" / f"{names[1]}.jpg").write_bytes(b"\x00" * 10)
    mask_path = root / "Mask" / f"{names[2]}.png"
    Image.open(mask_path).resize((20, 20)).save(mask_path)
    (root / "test.txt").write_text("")
    problems = check_data(_binary_cfg(root), "binary")
    assert len(problems) == 4
    joined = "\n".join(problems)
    for expected in (
        f"no mask for '{names[0]}'",
        f"{root / 'Image' / names[1]}.jpg: cannot read image",
        f"{mask_path}: mask size 20×20 differs",
        f"{root / 'test.txt'}: list file is empty",
    ):
        assert expected in joined


def test_shared_samples_are_clean(shared_data: Path) -> None:
    cfg = DataConfig(layout="voc", root=shared_data / "voc_samples")
    assert check_data(cfg, "semantic", ["val"]) == []
