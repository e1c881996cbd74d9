from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segkd.data import (
    DataConfig,
    build_dataset,
    check_data,
    make_synthetic,
    voc_palette,
)

SMALL = {"num_train": 6, "num_val": 3, "image_size": 32}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "synthetic.json"
    }


@pytest.mark.parametrize("task", ["binary", "semantic"])
def test_same_seed_same_files_other_seed_other_files(task: str, tmp_path: Path) -> None:
    first = _files(make_synthetic(tmp_path / "a", task, seed=1, **SMALL))
    second = _files(make_synthetic(tmp_path / "b", task, seed=1, **SMALL))
    other = _files(make_synthetic(tmp_path / "c", task, seed=2, **SMALL))
    assert first == second
    assert first.keys() == other.keys()
    images = [key for key in first if key.lower().startswith(("image", "images"))]
    assert all(first[key] != other[key] for key in images)


def test_binary_layout_and_masks(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path, "binary", **SMALL)
    assert (root / "train.txt").read_text().split() == [f"train_{i:04d}" for i in range(6)]
    assert (root / "test.txt").read_text().split() == [f"test_{i:04d}" for i in range(3)]
    for name in (root / "train.txt").read_text().split():
        image = Image.open(root / "Image" / f"{name}.png")
        mask = np.array(Image.open(root / "Mask" / f"{name}.png"))
        assert image.mode == "RGB" and image.size == (32, 32) and mask.shape == (32, 32)
        assert set(np.unique(mask).tolist()) == {0, 255}


def test_semantic_layout_and_labels(tmp_path: Path) -> None:
    root = make_synthetic(
        tmp_path, "semantic", num_train=24, num_val=4, image_size=48, num_classes=5
    )
    lines = (root / "train.txt").read_text().splitlines()
    assert lines[0] == "images/train_0000.png labels/train_0000.png"
    seen: set[int] = set()
    for line in lines:
        label_image = Image.open(root / line.split()[1])
        assert label_image.mode == "P"
        assert label_image.getpalette()[:9] == voc_palette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        seen |= set(np.unique(np.array(label_image)).tolist())
    assert seen == {0, 1, 2, 3, 4, 255}  # every class appears, plus ignore borders


def test_semantic_classes_have_their_own_colours(tmp_path: Path) -> None:
    root = make_synthetic(
        tmp_path, "semantic", num_train=24, num_val=1, image_size=48, num_classes=4
    )
    colour_sums = {cls: np.zeros(3) for cls in (1, 2, 3)}
    counts = dict.fromkeys(colour_sums, 0)
    for line in (root / "train.txt").read_text().splitlines():
        image_rel, label_rel = line.split()
        image = np.array(Image.open(root / image_rel)).astype(np.float64)
        label = np.array(Image.open(root / label_rel))
        for cls in colour_sums:
            colour_sums[cls] += image[label == cls].sum(axis=0)
            counts[cls] += int((label == cls).sum())
    means = {cls: colour_sums[cls] / counts[cls] for cls in colour_sums}
    # Class hues are spread around the colour wheel: mean colours differ clearly.
    for a in means:
        for b in means:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 25


def test_generation_is_reused_and_redone_when_parameters_change(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path, "binary", seed=0, **SMALL)
    stamp = (root / "Image" / "train_0000.png").stat().st_mtime_ns
    make_synthetic(tmp_path, "binary", seed=0, **SMALL)
    assert (root / "Image" / "train_0000.png").stat().st_mtime_ns == stamp
    make_synthetic(tmp_path, "binary", seed=4, **SMALL)
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 4
    (root / "Mask" / "test_0001.png").unlink()  # an incomplete set is regenerated
    make_synthetic(tmp_path, "binary", seed=4, **SMALL)
    assert (root / "Mask" / "test_0001.png").is_file()


def test_sample_does_not_depend_on_the_set_size(tmp_path: Path) -> None:
    small = make_synthetic(tmp_path / "small", "semantic", num_train=2, num_val=1, image_size=32)
    large = make_synthetic(tmp_path / "large", "semantic", num_train=5, num_val=2, image_size=32)
    for path in ("images/train_0001.png", "labels/train_0001.png", "images/val_0000.png"):
        assert (small / path).read_bytes() == (large / path).read_bytes()


def test_label_noise_changes_only_training_labels(tmp_path: Path) -> None:
    clean = make_synthetic(tmp_path / "clean", "binary", num_train=24, num_val=4, image_size=32)
    noisy = make_synthetic(
        tmp_path / "noisy", "binary", num_train=24, num_val=4, image_size=32, label_noise=0.5
    )
    changed = 0
    for name in [f"train_{i:04d}" for i in range(24)] + [f"test_{i:04d}" for i in range(4)]:
        assert (clean / "Image" / f"{name}.png").read_bytes() == (noisy / "Image" / f"{name}.png").read_bytes()
        truth = np.array(Image.open(clean / "Mask" / f"{name}.png"))
        given = np.array(Image.open(noisy / "Mask" / f"{name}.png"))
        # Binary noise only removes objects (missed annotations), and never from the test split.
        assert not (given > truth).any()
        if name.startswith("test"):
            assert (given == truth).all()
        changed += int((given != truth).any())
    assert 4 <= changed < 24  # about half of the training images lose an object
    # a set recorded with a binary label_noise by an older version (clean masks) is not reused as noisy
    params = json.loads((noisy / "synthetic.json").read_text())
    (noisy / "synthetic.json").write_text(json.dumps({k: v for k, v in params.items() if k != "binary_noise"}))
    stamp = (noisy / "Mask" / "train_0000.png").stat().st_mtime_ns
    make_synthetic(tmp_path / "noisy", "binary", num_train=24, num_val=4, image_size=32, label_noise=0.5)
    assert (noisy / "Mask" / "train_0000.png").stat().st_mtime_ns != stamp


def test_invalid_class_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes must be in"):
        make_synthetic(tmp_path, "semantic", num_classes=9)


@pytest.mark.parametrize("task", ["binary", "semantic"])
def test_config_generates_and_reads_the_set(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(
        synthetic={"num_train": 4, "num_val": 2, "image_size": 32},
        crop_size=25, train_size=24, test_size=16, multiscale_sizes=[16, 20],
        batch_size=2, num_workers=0,
    )  # fmt: skip
    assert check_data(cfg, task) == []
    assert (tmp_path / "data" / f"synthetic-{task}" / "synthetic.json").is_file()
    train = build_dataset(cfg, task, "train")
    val = build_dataset(cfg, task, "val")
    assert (len(train), len(val)) == (4, 2)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(train, batch_size=2)))
    val_batch = next(iter(DataLoader(val, batch_size=1)))
    if task == "binary":
        assert batch["image"].shape == (2, 3, 24, 24) and batch["mask"].shape == (2, 1, 24, 24)
        assert val_batch["image"].shape == (1, 3, 16, 16)
        assert val_batch["mask"].shape == (1, 1, 32, 32)
    else:
        assert batch["image"].shape == (2, 3, 25, 25) and batch["mask"].shape == (2, 25, 25)
        assert val_batch["mask"].shape == (1, 32, 32) and val_batch["mask"].dtype == torch.int64
        assert set(val_batch["mask"].unique().tolist()) <= {0, 1, 2, 3, 255}
