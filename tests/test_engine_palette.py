"""Predictions are coloured with their data set's palette (Cityscapes here), not VOC's."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from segkd.data.classes import CITYSCAPES_COLORS, voc_palette
from segkd.engine import run
from segkd.engine.evaluate import evaluate_with_config
from segkd.engine.panels import log_prediction_images

from engine_helpers import tiny_semantic_config

NUM_CLASSES = len(CITYSCAPES_COLORS)


class ColumnBands(nn.Module):
    """Predicts class ⌊19·x / W⌋ at column x: every Cityscapes class appears in a wide image."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        width = x.shape[-1]
        classes = torch.arange(width, device=x.device) * NUM_CLASSES // width
        logits = 10.0 * nn.functional.one_hot(classes, NUM_CLASSES).T.float()  # C×W
        return {"out": logits[None, :, None, :].expand(x.shape[0], -1, x.shape[-2], -1)}


def _cityscapes_config(tmp_path):
    cfg = tiny_semantic_config(tmp_path, data={"layout": "cityscapes", "root": str(tmp_path / "cityscapes"),
                                               "crop_size": 38, "base_size": 76})
    assert cfg.data.num_classes == NUM_CLASSES
    return cfg


def _assert_cityscapes_colours(rgb: np.ndarray, label: np.ndarray) -> None:
    """Each pixel of an H×W×3 map has the Cityscapes colour of its class in ``label``."""
    present = np.unique(label)
    assert len(present) == NUM_CLASSES  # the check covers every class
    expected = np.asarray(CITYSCAPES_COLORS, np.uint8)[label]
    np.testing.assert_array_equal(rgb, expected)
    voc = np.asarray(voc_palette(), np.uint8).reshape(256, 3)[label]
    assert (rgb != voc).any()  # VOC's colours would fail here


def test_predict_writes_cityscapes_palette_and_overlay_colours(tmp_path, monkeypatch):
    cfg = _cityscapes_config(tmp_path)
    monkeypatch.setattr(run, "load_trained", lambda *a, **k: (cfg, ColumnBands().eval(), torch.device("cpu")))
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((19, 76, 3), np.uint8)).save(tmp_path / "photos" / "street.png")
    [written] = run.predict_images("unused.pt", tmp_path / "photos", tmp_path / "pred")
    saved = Image.open(written)
    assert saved.mode == "P"
    label = np.array(saved)
    _assert_cityscapes_colours(np.array(saved.convert("RGB")), label)
    # The overlay over a black photo is half the class colour (JPEG: within a few levels).
    blend = np.array(Image.open(tmp_path / "pred" / "overlay" / "street.jpg")).astype(int)
    expected = np.rint(np.asarray(CITYSCAPES_COLORS, np.float32)[label] / 2)
    assert np.abs(blend - expected)[:, 4:-4].mean() < 4


def test_eval_save_dir_uses_the_cityscapes_palette(tmp_path):
    cfg = _cityscapes_config(tmp_path)
    samples = [{"image": torch.zeros(3, 19, 76), "mask": torch.zeros(19, 76, dtype=torch.long), "name": "street"}]
    evaluate_with_config(ColumnBands(), samples, cfg, torch.device("cpu"), save_dir=tmp_path / "saved")
    saved = Image.open(tmp_path / "saved" / "street.png")
    _assert_cityscapes_colours(np.array(saved.convert("RGB")), np.array(saved))


def test_tensorboard_panel_uses_the_cityscapes_colours(tmp_path):
    cfg = _cityscapes_config(tmp_path)
    mask = torch.arange(76).expand(19, 76) * NUM_CLASSES // 76
    samples = [{"image": torch.zeros(3, 19, 76), "mask": mask, "name": "street"}]

    class Writer:
        images: list[np.ndarray] = []

        def add_image(self, tag, image, step, dataformats="CHW"):
            self.images.append(image)

    writer = Writer()
    log_prediction_images(writer, ColumnBands(), samples, cfg, torch.device("cpu"), step=0)
    [panel] = writer.images
    truth, predicted = panel[:, :76], panel[:, 76:]
    _assert_cityscapes_colours(truth, mask.numpy())
    _assert_cityscapes_colours(predicted, mask.numpy())  # the bands are predicted exactly
