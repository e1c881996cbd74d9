"""data.holdout (a validation part of the training list) and data.long_side (resize on reading)."""
from __future__ import annotations

import numpy as np
import pytest

from segkd.data import DataError, build_dataset
from segkd.data.build import is_held_out
from segkd.data.config import DataConfig
from segkd.data.semantic import resize_long_side
from segkd.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def semseg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("semseg")
    make_synthetic(root, "semantic", num_train=20, num_val=4, image_size=32, num_classes=4, seed=0)
    return root


def _cfg(root, **extra):
    return DataConfig(layout="semseg_list", root=root, train_split="train.txt", num_classes=4,
                      crop_size=32, base_size=32, **extra)


def _names(dataset):
    return {sample.name for sample in dataset.samples}


def test_holdout_splits_the_training_list_in_two_disjoint_parts(semseg_root):
    everything = _names(build_dataset(_cfg(semseg_root), "semantic", "train"))
    cfg = _cfg(semseg_root, holdout=0.3, val_split="holdout")
    train, held_out = (_names(build_dataset(cfg, "semantic", split)) for split in ("train", "val"))
    assert train | held_out == everything and not train & held_out
    assert held_out == {name for name in everything if is_held_out(name, 0.3)}
    assert 0 < len(held_out) < len(everything)
    # the side of a sample depends on its name alone, not on the list's order or length
    assert is_held_out("train_0003", 0.3) == is_held_out("train_0003", 0.3)
    assert sum(is_held_out(f"img{i}", 0.3) for i in range(2000)) == pytest.approx(600, abs=80)


def test_holdout_split_without_a_fraction_is_refused(semseg_root):
    with pytest.raises(DataError, match="data.holdout"):
        build_dataset(_cfg(semseg_root, val_split="holdout"), "semantic", "val")


def test_long_side_resizes_image_and_label_together():
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 40:] = 200
    label = np.zeros((40, 80), dtype=np.int64)
    label[:, 40:] = 3
    label[0, 0] = 255
    small_image, small_label = resize_long_side(image, label, 20)
    assert small_image.shape == (10, 20, 3) and small_label.shape == (10, 20)
    assert small_label.dtype == label.dtype
    assert set(np.unique(small_label)) <= {0, 3, 255}  # nearest neighbour: no new label values
    assert (small_label[:, 11:] == 3).all() and (small_label[1:, :9] == 0).all()


def test_long_side_applies_to_evaluation_samples(semseg_root):
    sample = build_dataset(_cfg(semseg_root, long_side=16), "semantic", "val")[0]
    assert sample["mask"].shape == (16, 16)
