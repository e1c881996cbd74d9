"""Cityscapes, ADE20K and CamVid layouts on tiny generated folders: listing, label mapping, checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segkd.cli import main
from segkd.data import DataConfig, build_dataset, check_data
from segkd.data.classes import layout_palette
from segkd.data.layouts import LAYOUTS
from segkd.data.semantic import SemanticSegDataset

# Cityscapes labelIds -> train ids, written out from cityscapesScripts' labels.py.
CITYSCAPES_EXPECTED = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _cityscapes(root: Path, label_values: np.ndarray) -> None:
    h, w = label_values.shape
    for split, city, n in [("train", "aachen", 0), ("train", "bremen", 1), ("val", "lindau", 2)]:
        stem = f"{city}_00000{n}_000019"
        _write(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image(h, w, n))
        _write(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_values)
    # bremen also ships train ids: those are read as they are
    train_ids = np.full((h, w), 255, np.uint8)
    train_ids[0, :3] = [0, 5, 18]
    _write(root / "gtFine" / "train" / "bremen" / "bremen_000001_000019_gtFine_labelTrainIds.png", train_ids)


def _masks(cfg: DataConfig, split: str) -> dict[str, np.ndarray]:
    dataset = build_dataset(cfg, "semantic", split)
    return {item["name"]: item["mask"].numpy() for item in (dataset[i] for i in range(len(dataset)))}


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path: Path) -> None:
    raw = np.arange(36, dtype=np.uint8).reshape(6, 6) % 34  # every labelId 0..33
    _cityscapes(tmp_path, raw)
    cfg = DataConfig(layout="cityscapes", root=tmp_path, base_size=6, num_workers=0)
    assert cfg.num_classes == 19 and cfg.class_names[:2] == ["road", "sidewalk"]
    val = _masks(cfg, "val")["lindau_000002_000019_leftImg8bit"]
    for value in range(34):
        assert set(val[raw == value].tolist()) == {CITYSCAPES_EXPECTED.get(value, 255)}, value
    layout = LAYOUTS["cityscapes"]
    dataset = SemanticSegDataset(tmp_path, pairs=layout.pairs(tmp_path, "train"), num_classes=19,
                                 label_map=layout.label_map)  # no transform: labels as mapped
    train = {item["name"]: item["mask"].numpy() for item in (dataset[0], dataset[1])}
    assert np.array_equal(train["aachen_000000_000019_leftImg8bit"], val)
    assert train["bremen_000001_000019_leftImg8bit"][0, :4].tolist() == [0, 5, 18, 255]
    assert layout_palette("cityscapes")[:6] == [128, 64, 128, 244, 35, 232]


def test_ade20k_reduces_the_zero_label(tmp_path: Path) -> None:
    raw = np.arange(151, dtype=np.uint8).reshape(1, 151)
    for split, folder in [("train", "training"), ("val", "validation")]:
        _write(tmp_path / "images" / folder / f"ADE_{split}_00000001.jpg", _image(1, 151))
        _write(tmp_path / "annotations" / folder / f"ADE_{split}_00000001.png", raw)
    cfg = DataConfig(layout="ade20k", root=tmp_path, base_size=151, num_workers=0)
    assert cfg.num_classes == 150 and cfg.class_names[0] == "wall" and cfg.class_names[-1] == "flag"
    mask = _masks(cfg, "val")["ADE_val_00000001"][0]
    assert mask[0] == 255 and mask[1:].tolist() == list(range(150))
    assert check_data(cfg, "semantic") == []


def test_camvid_void_is_ignored(tmp_path: Path) -> None:
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for split in ("train", "val", "test"):
        _write(tmp_path / split / "0001TP_006690.png", _image(3, 4))
        _write(tmp_path / f"{split}annot" / "0001TP_006690.png", raw)
    cfg = DataConfig(layout="camvid", root=tmp_path, val_split="test", base_size=4, num_workers=0)
    assert cfg.num_classes == 11 and cfg.class_names[-1] == "bicyclist"
    mask = _masks(cfg, "val")["0001TP_006690"]
    assert mask.flatten().tolist() == [*range(11), 255]
    assert layout_palette("camvid")[30:33] == [0, 128, 192]
    with pytest.raises(ValueError, match="differs from the 11 classes of layout 'camvid'"):
        DataConfig(layout="camvid", root=tmp_path, num_classes=12)


def test_training_batches_of_a_layout_hold_train_ids(tmp_path: Path) -> None:
    _cityscapes(tmp_path, np.arange(64, dtype=np.uint8).reshape(8, 8) % 34)
    cfg = DataConfig(layout="cityscapes", root=tmp_path, crop_size=8, batch_size=2, num_workers=0)
    batch = next(iter(DataLoader(build_dataset(cfg, "semantic", "train"), batch_size=2)))
    values = set(torch.unique(batch["mask"]).tolist())
    assert values <= set(range(19)) | {255} and len(values) > 5


def test_check_data_reports_foreign_label_values_and_missing_files(tmp_path: Path, capsys) -> None:
    _cityscapes(tmp_path / "city", np.full((4, 4), 7, np.uint8))
    bad = tmp_path / "city" / "gtFine" / "val" / "lindau" / "lindau_000002_000019_gtFine_labelIds.png"
    _write(bad, np.array([[7, 40], [41, 255]], np.uint8).repeat(2, 0).repeat(2, 1))
    (tmp_path / "city" / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").unlink()
    cfg = DataConfig(layout="cityscapes", root=tmp_path / "city", num_workers=0)
    problems = check_data(cfg, "semantic")
    missing = tmp_path / "city/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    assert problems == [
        f"{missing}: label file not found",
        f"{bad}: label values [40, 41, 255] are not Cityscapes labelIds (expected 0..33)",
    ]

    _write(tmp_path / "ade" / "images" / "training" / "a.jpg", _image(2, 2))
    _write(tmp_path / "ade" / "annotations" / "training" / "a.png", np.full((2, 2), 151, np.uint8))
    ade = DataConfig(layout="ade20k", root=tmp_path / "ade", num_workers=0)
    assert check_data(ade, "semantic") == [
        f"{tmp_path / 'ade/annotations/training/a.png'}: label values [151] are not ADE20K labels "
        "(expected 0..150)",
        f"{tmp_path / 'ade/images/validation'}: image folder not found",
    ]

    config = tmp_path / "camvid.yaml"
    _write(tmp_path / "camvid" / "train" / "x.png", _image(2, 2))
    _write(tmp_path / "camvid" / "trainannot" / "x.png", np.full((2, 2), 12, np.uint8))
    config.write_text(
        f"task: semantic\nmodel: {{name: pspnet18}}\ndata: {{layout: camvid, root: {tmp_path / 'camvid'}, "
        "val_split: train}\n"
    )
    assert main(["check-data", str(config)]) == 1
    assert "x.png: label values [12] are not CamVid (SegNet) labels (expected 0..11)" in capsys.readouterr().out
