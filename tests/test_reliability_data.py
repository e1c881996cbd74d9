"""One binary mask rule everywhere, check-data's summary, and honest folder scoring."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.data import DataConfig, build_dataset, check_data
from segkd.data.checks import DataSummary
from segkd.data.readers import binarize_mask, read_binary_mask
from segkd.metrics import evaluate_folders
from segkd.metrics.folder import FolderError


def _square(value: int, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 4:10] = value  # 48 foreground pixels
    return mask


def _binary_set(root: Path, fg_value: int, names=("a", "b", "c")) -> None:
    (root / "Image").mkdir(parents=True)
    (root / "Mask").mkdir()
    for name in names:
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / "Image" / f"{name}.png")
        Image.fromarray(_square(fg_value)).save(root / "Mask" / f"{name}.png")
    for split in ("train", "test"):
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")


def test_one_rule_reads_0_1_and_0_255_masks_alike(tmp_path):
    assert binarize_mask(_square(1)).sum() == 48
    assert (binarize_mask(_square(255)) == binarize_mask(_square(1))).all()
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    assert binarize_mask(grey).tolist() == [[0, 0, 1, 1]]  # anything but 0/1: >= 128
    Image.fromarray(_square(1)).save(tmp_path / "m.png")
    assert read_binary_mask(tmp_path / "m.png").sum() == 48  # was 0: all background


def test_training_data_and_check_data_see_0_1_masks(tmp_path):
    _binary_set(tmp_path / "set", fg_value=1)
    cfg = DataConfig(layout="binary", root=tmp_path / "set", train_size=16, test_size=16, multiscale_sizes=[])
    mask = build_dataset(cfg, "binary", "val")[0]["mask"]
    assert mask.sum().item() == 48
    summary = DataSummary()
    assert check_data(cfg, "binary", summary=summary) == []
    assert summary.images == {"train": 3, "test": 3}
    lines = summary.lines("binary")
    assert lines[0] == "train: 3 image(s); masks 3 0/1"
    assert "largest value is 1" in lines[-1]


def test_folder_scoring_reads_0_1_masks_like_0_255(tmp_path):
    pred = _square(200)
    pred[4:6, 4:10] = 0  # a prediction with a few misses
    for folder, value in (("gt01", 1), ("gt255", 255)):
        (tmp_path / folder).mkdir()
        Image.fromarray(_square(value)).save(tmp_path / folder / "x.png")
    (tmp_path / "pred").mkdir()
    Image.fromarray(pred).save(tmp_path / "pred" / "x.png")
    a = evaluate_folders(tmp_path / "pred", tmp_path / "gt01")
    b = evaluate_folders(tmp_path / "pred", tmp_path / "gt255")
    assert a["metrics"] == b["metrics"]
    # pysodmetrics min-max normalises the map (200 → 1): MAE = the 12 missed pixels of 256
    assert b["metrics"]["MAE"] == pytest.approx(12 / 256, abs=1e-9)


def test_binary_resizes_are_counted_and_semantic_ones_refused(tmp_path):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    Image.fromarray(_square(255, 16)).save(tmp_path / "gt" / "x.png")
    Image.fromarray(_square(255, 16)).save(tmp_path / "gt" / "y.png")
    Image.fromarray(_square(255, 16)).save(tmp_path / "pred" / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pred" / "y.png")
    assert evaluate_folders(tmp_path / "pred", tmp_path / "gt")["resized"] == 1
    with pytest.raises(FolderError, match=r"pred/y\.png: prediction is 8×8 but its mask .*gt/y\.png is 16×16"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_classes=2)


def test_names_restrict_the_scored_masks(tmp_path):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for name in ("train1", "test1", "test2"):
        Image.fromarray(_square(255)).save(tmp_path / "gt" / f"{name}.png")
    for name in ("test1", "test2"):  # no prediction for the training image
        Image.fromarray(_square(255)).save(tmp_path / "pred" / f"{name}.png")
    with pytest.raises(FileNotFoundError, match="train1"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", names=["test1", "test2"])
    assert result["num_images"] == 2 and result["metrics"]["MAE"] == 0.0
    with pytest.raises(FileNotFoundError, match="1 listed name.*: nosuch"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", names=["test1", "nosuch"])


def test_missing_data_root_and_config_name_are_named(tmp_path):
    from segkd.config import ConfigError, find_config

    cfg = DataConfig(layout="binary", root=tmp_path / "nowhere")
    assert check_data(cfg, "binary") == [f"{tmp_path / 'nowhere'}: data folder not found (data.root)"]
    with pytest.raises(ConfigError, match="close names: tiny_binary"):
        find_config("tiny_binry")
