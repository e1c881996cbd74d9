from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.metrics import SODMetrics, evaluate_folders, format_table


def _save_grey(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _binary_masks() -> dict[str, np.ndarray]:
    # "a": 32×32 with a 16×16 square; "b": 40×48 with a 10×12 block (fraction 120/1920 = 1/16).
    mask_a = np.zeros((32, 32), dtype=np.uint8)
    mask_a[8:24, 8:24] = 255
    mask_b = np.zeros((40, 48), dtype=np.uint8)
    mask_b[10:20, 12:24] = 255
    return {"a": mask_a, "b": mask_b}


def test_binary_folders_pair_by_stem_and_resize(tmp_path: Path) -> None:
    masks = _binary_masks()
    _save_grey(masks["a"], tmp_path / "gt" / "a.bmp")
    _save_grey(masks["b"], tmp_path / "gt" / "b.png")
    # "a" is predicted perfectly; "b" is an all-black map at half size saved as JPEG.
    _save_grey(masks["a"], tmp_path / "pred" / "a.png")
    _save_grey(np.zeros((20, 24), dtype=np.uint8), tmp_path / "pred" / "b.jpg")

    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt")

    assert result["task"] == "binary"
    assert result["num_images"] == 2
    # MAE: 0 for "a", the foreground fraction 1/16 for the all-zero "b".
    assert result["metrics"]["MAE"] == pytest.approx((0 + 1 / 16) / 2)
    expected = SODMetrics()
    expected.step(masks["a"], masks["a"])
    expected.step(np.zeros((40, 48), dtype=np.uint8), masks["b"])
    assert result["metrics"] == pytest.approx(expected.get_results())


def test_missing_prediction_is_named(tmp_path: Path) -> None:
    masks = _binary_masks()
    for name, mask in masks.items():
        _save_grey(mask, tmp_path / "gt" / f"{name}.png")
    _save_grey(masks["a"], tmp_path / "pred" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"1 mask\(s\) .* have no prediction .*: b$"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")


def test_prediction_without_mask_warns_and_is_skipped(tmp_path: Path) -> None:
    mask = _binary_masks()["a"]
    _save_grey(mask, tmp_path / "gt" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "extra.png")
    with pytest.warns(UserWarning, match="no mask .*: extra"):
        result = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["num_images"] == 1


def test_ambiguous_names_are_rejected(tmp_path: Path) -> None:
    mask = _binary_masks()["a"]
    _save_grey(mask, tmp_path / "gt" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.png")
    _save_grey(mask, tmp_path / "pred" / "a.jpg")
    with pytest.raises(ValueError, match="'a' is ambiguous: a.jpg and a.png"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")


# Semantic case: a 4×4 label grid blown up 2× to an 8×8 palette mask; the prediction is saved
# as a 4×4 grey map and upsampled (nearest) back to 8×8, so each low-res pixel covers 4 pixels.
#   gt (4×4)            pred (4×4)
#   0 0 1 1             1 0 1 1        one class-0 pixel predicted as 1,
#   0 0 1 1             0 0 1 1        the ignored pixels predicted as 0
#   2 2 255 255         2 2 0 0
#   2 2 2 2             2 2 2 2
# Counts at 8×8 (×4): class 0: I 12, T 16, P 12 -> U 16, IoU 3/4, Acc 3/4
#                     class 1: I 16, T 16, P 20 -> U 20, IoU 4/5, Acc 1
#                     class 2: I 24, T 24, P 24 -> U 24, IoU 1,   Acc 1
# mIoU = (0.75 + 0.8 + 1)/3 = 0.85; mAcc = 2.75/3; allAcc = 52/56 = 13/14
GT_GRID = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 2, 2]], dtype=np.uint8)
PRED_GRID = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 2, 2]], dtype=np.uint8)


def _save_palette(labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(path)


def test_semantic_folders(tmp_path: Path) -> None:
    _save_palette(np.kron(GT_GRID, np.ones((2, 2), dtype=np.uint8)), tmp_path / "gt" / "s1.png")
    _save_grey(np.kron(PRED_GRID, np.ones((2, 2), dtype=np.uint8)), tmp_path / "pred" / "s1.png")

    result = evaluate_folders(
        tmp_path / "pred", tmp_path / "gt", num_classes=3, class_names=["bg", "cat", "dog"]
    )

    assert result["task"] == "semantic"
    assert result["num_images"] == 1
    metrics = result["metrics"]
    assert metrics["mIoU"] == pytest.approx(0.85)
    assert metrics["mAcc"] == pytest.approx(2.75 / 3)
    assert metrics["allAcc"] == pytest.approx(13 / 14)
    assert metrics["per_class"]["cat"] == pytest.approx({"IoU": 0.8, "Acc": 1.0})

    table = format_table(metrics)
    assert "mIoU    0.8500" in table
    assert "cat        0.8000  1.0000" in table


def test_semantic_out_of_range_label_names_the_file(tmp_path: Path) -> None:
    _save_palette(GT_GRID, tmp_path / "gt" / "s1.png")
    _save_grey(np.full((4, 4), 7, dtype=np.uint8), tmp_path / "pred" / "s1.png")
    with pytest.raises(ValueError, match=r"s1\.png.*predicted class id values \[7\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3)


def test_semantic_rgb_label_map_is_rejected(tmp_path: Path) -> None:
    _save_palette(GT_GRID, tmp_path / "gt" / "s1.png")
    (tmp_path / "pred").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pred" / "s1.png")
    with pytest.raises(ValueError, match=r"s1\.png: label map has mode 'RGB'"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3)
