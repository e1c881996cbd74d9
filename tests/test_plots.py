"""Figures are valid PNGs of the intended size; the VOC colour helpers give the known colours."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.commands.plots import (
    plot_f_threshold,
    plot_metric_bars,
    plot_pr_curves,
    plot_qualitative_grid,
    plot_training_curves,
)
from segkd.data.classes import voc_palette
from segkd.engine.colorize import colorize_labels, overlay

THRESHOLDS = np.arange(256) / 255


def _curves() -> dict[str, dict[str, np.ndarray]]:
    recall = 1 - THRESHOLDS
    curves = {}
    for exponent, method in enumerate(["baseline", "pspsd"], start=2):
        precision = 0.5 + 0.45 * (1 - recall**exponent)
        fmeasure = 1.3 * precision * recall / (0.3 * precision + recall + 1e-12)
        curves[method] = {"precision": precision, "recall": recall, "fmeasure": fmeasure, "thresholds": THRESHOLDS}
    return curves


def _open_png(path: Path) -> Image.Image:
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temporary file left behind"
    image = Image.open(path)
    assert image.format == "PNG"
    return image.convert("RGB")


def test_pr_curves(tmp_path: Path) -> None:
    image = _open_png(plot_pr_curves(_curves(), tmp_path / "pr.png"))
    assert image.size == (550, 500)


def test_f_threshold(tmp_path: Path) -> None:
    assert _open_png(plot_f_threshold(_curves(), tmp_path / "f.png")).size == (600, 450)


def test_curve_errors_name_the_method(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="method 'a': missing \\['recall'\\]"):
        plot_pr_curves({"a": {"precision": [1.0]}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="method 'b': 'thresholds' has 256 values, 'fmeasure' 3"):
        plot_f_threshold({"b": {"thresholds": THRESHOLDS, "fmeasure": [0.1, 0.2, 0.3]}}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_metric_bars(tmp_path: Path) -> None:
    table = {"baseline": (0.81, 0.01), "pspsd": (0.84, None), "byot": (0.82, 0.02)}
    image = _open_png(plot_metric_bars(table, "maxFm", tmp_path / "bars.png"))
    assert image.size == (420, 400)  # 0.9 in per bar + 1.5 in, at 100 dpi
    # The first bar is drawn in matplotlib's first cycle colour.
    assert (np.asarray(image) == (31, 119, 180)).all(axis=2).sum() > 1000


def test_qualitative_grid_shows_each_cell(tmp_path: Path) -> None:
    image = np.full((24, 32, 3), 200, dtype=np.uint8)
    truth = np.zeros((24, 32), dtype=np.int64)
    truth[4:20, 4:28] = 1
    rows = [
        {
            "name": f"sample{k}",
            "image": image,
            "ground truth": colorize_labels(truth, 2),
            "student": (truth * 255).astype(np.uint8),
            "teacher": np.zeros((48, 64), dtype=np.uint8),
        }
        for k in range(2)
    ]
    columns = ["image", "ground truth", "student", "teacher"]
    png = np.asarray(_open_png(plot_qualitative_grid(rows, columns, tmp_path / "grid.png")))
    assert png.shape[1] == 4 * 220
    assert png.shape[0] == pytest.approx(2 * 220 * 24 / 32 + 40, abs=1)
    assert (png == (128, 0, 0)).all(axis=2).sum() > 500, "VOC class-1 red missing from the grid"


def test_qualitative_grid_errors_name_row_and_column(tmp_path: Path) -> None:
    grey = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(KeyError, match="row 1: no entry for column 'pred'"):
        plot_qualitative_grid([{"pred": grey}, {"image": grey}], ["pred"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="row 0, column 'pred': expected uint8, got float64"):
        plot_qualitative_grid([{"pred": grey.astype(np.float64)}], ["pred"], tmp_path / "x.png")


def test_training_curves(tmp_path: Path) -> None:
    steps = list(range(0, 100, 10))
    histories = {
        "kd": {"step": steps, "loss": [1 / (1 + s) for s in steps],
               "val_metric": [None] * 4 + [0.5] + [None] * 4 + [0.6]},
        "baseline": {"step": steps, "loss": [2 / (1 + s) for s in steps],
                     "val_step": [50, 90], "val_metric": [0.4, 0.5]},
    }
    assert _open_png(plot_training_curves(histories, tmp_path / "train.png", metric_name="mIoU")).size == (1100, 400)


def test_training_curves_without_validation(tmp_path: Path) -> None:
    histories = {"kd": {"step": [0, 1, 2], "loss": [0.0, -1.0, 2.0]}}
    assert _open_png(plot_training_curves(histories, tmp_path / "train.png")).size == (600, 400)


def test_voc_palette_known_colours() -> None:
    palette = voc_palette()
    assert len(palette) == 768
    colour = lambda i: tuple(palette[3 * i : 3 * i + 3])  # noqa: E731
    assert colour(0) == (0, 0, 0)
    assert colour(1) == (128, 0, 0)
    assert colour(2) == (0, 128, 0)
    assert colour(15) == (192, 128, 128)  # VOC "person"
    assert colour(255) == (224, 224, 192)


def test_colorize_labels() -> None:
    label = np.array([[0, 1], [255, 2]])
    expected = np.array([[[0, 0, 0], [128, 0, 0]], [[224, 224, 192], [0, 128, 0]]], dtype=np.uint8)
    colours = colorize_labels(label, num_classes=3)
    assert colours.dtype == np.uint8
    np.testing.assert_array_equal(colours, expected)
    with pytest.raises(ValueError, match=r"label values \[3, 7\] are outside \[0, 3\)"):
        colorize_labels(np.array([[3, 7], [0, 1]]), num_classes=3)


def test_overlay_blends_by_alpha() -> None:
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    colours = np.full((2, 3, 3), 200, dtype=np.uint8)
    np.testing.assert_array_equal(overlay(image, colours, alpha=0.25), np.full((2, 3, 3), 125, dtype=np.uint8))
    with pytest.raises(ValueError, match="must both be H×W×3"):
        overlay(image, colours[:1])
