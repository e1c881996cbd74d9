from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.data import (
    BinarySegDataset,
    DataConfig,
    DataError,
    SemanticSegDataset,
    build_dataset,
    read_pair_list,
    voc_pairs,
)


def _first_name(list_file: Path) -> str:
    return list_file.read_text().split()[0]


def test_sod300_train_split(shared_data: Path) -> None:
    root = shared_data / "sod300"
    dataset = BinarySegDataset(root, "train")
    assert len(dataset) == 200
    sample = dataset[0]
    name = _first_name(root / "train.txt")
    assert sample["name"] == name
    image, mask = sample["image"], sample["mask"]
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    assert image.shape[0] == 3 and mask.shape == (1, *image.shape[1:])
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # Without a transform the image keeps raw 0-255 values and the mask is the PNG at >= 128.
    raw = np.array(Image.open(root / "Image" / f"{name}.jpg").convert("RGB"))
    assert torch.equal(image, torch.from_numpy(raw).permute(2, 0, 1).float())
    grey = np.array(Image.open(root / "Mask" / f"{name}.png").convert("L"))
    assert mask.sum().item() == float((grey >= 128).sum())


def test_sod300_through_the_config(shared_data: Path) -> None:
    cfg = DataConfig(layout="binary", root=shared_data / "sod300", train_size=64, test_size=48)
    train = build_dataset(cfg, "binary", "train")[0]
    assert train["image"].shape == (3, 64, 64) and train["mask"].shape == (1, 64, 64)
    assert set(train["mask"].unique().tolist()) <= {0.0, 1.0}
    val_set = build_dataset(cfg, "binary", "val")
    assert len(val_set) == 100  # the default binary val split is test.txt
    val = val_set[0]
    raw_mask = Image.open(shared_data / "sod300" / "Mask" / f"{val['name']}.png")
    assert val["image"].shape == (3, 48, 48)
    assert val["mask"].shape == (1, raw_mask.height, raw_mask.width)  # full resolution


def test_lower_case_folders_are_accepted(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "sod300"
    names = (source / "test.txt").read_text().split()[:2]
    (tmp_path / "image").mkdir()
    (tmp_path / "mask").mkdir()
    for name in names:
        shutil.copy(source / "Image" / f"{name}.jpg", tmp_path / "image")
        shutil.copy(source / "Mask" / f"{name}.png", tmp_path / "mask")
    (tmp_path / "val.txt").write_text("\n".join(names) + "\n\n")
    dataset = BinarySegDataset(tmp_path, "val")
    assert [dataset[i]["name"] for i in range(len(dataset))] == names


def test_voc_layout(shared_data: Path) -> None:
    root = shared_data / "voc_samples"
    pairs = voc_pairs(root, "val")
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert len(pairs) == len(names) == 17
    first = names[0]
    assert pairs[0] == (Path(f"JPEGImages/{first}.jpg"), Path(f"SegmentationClass/{first}.png"))
    assert voc_pairs(root, "val", aug=True)[0][1] == Path(f"SegmentationClassAug/{first}.png")
    dataset = SemanticSegDataset(root, pairs=pairs, num_classes=21)
    seen: set[int] = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        mask = sample["mask"]
        assert mask.dtype == torch.int64 and mask.shape == sample["image"].shape[1:]
        values = set(mask.unique().tolist())
        assert values <= set(range(21)) | {255}
        seen |= values
    assert 255 in seen and len(seen - {0, 255}) >= 5
    # Palette PNGs are read as the indices behind the colours, unchanged.
    indices = np.array(Image.open(root / pairs[-1][1]))
    assert torch.equal(dataset[len(dataset) - 1]["mask"], torch.from_numpy(indices).long())


def test_semseg_list_file_matches_voc_pairs(shared_data: Path) -> None:
    root = shared_data / "voc_samples"
    from_list = SemanticSegDataset(root, list_file="val_list", num_classes=21)  # tries val_list.txt
    from_voc = SemanticSegDataset(root, pairs=voc_pairs(root, "val"), num_classes=21)
    assert [s.name for s in from_list.samples] == [s.name for s in from_voc.samples]
    assert read_pair_list(root, "val_list.txt")[0] == (
        Path("JPEGImages/vocval_0000.jpg"),
        Path("SegmentationClass/vocval_0000.png"),
    )


def test_semantic_eval_transform_normalises_only(shared_data: Path) -> None:
    root = shared_data / "voc_samples"
    cfg = DataConfig(layout="voc", root=root)
    sample = build_dataset(cfg, "semantic", "val")[0]
    raw = np.array(Image.open(root / "JPEGImages" / f"{sample['name']}.jpg").convert("RGB"))
    assert sample["image"].shape == (3, *raw.shape[:2])
    mean, std = cfg.normalization("semantic")
    expected = (float(raw[5, 7, 1]) - mean[1]) / std[1]
    assert sample["image"][1, 5, 7].item() == pytest.approx(expected, abs=1e-5)


def test_grey_label_png_holds_indices(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    label = np.array([[0, 1, 2, 255] * 2] * 6, dtype=np.uint8)
    Image.fromarray(label).save(tmp_path / "a_label.png")  # mode "L"
    dataset = SemanticSegDataset(tmp_path, pairs=[("a.png", "a_label.png")], num_classes=3)
    assert torch.equal(dataset[0]["mask"], torch.from_numpy(label).long())


def test_colour_label_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "rgb_label.png")
    dataset = SemanticSegDataset(tmp_path, pairs=[("a.png", "rgb_label.png")], num_classes=3)
    with pytest.raises(DataError, match=r"rgb_label\.png: label image has mode RGB"):
        dataset[0]


def test_layout_must_suit_the_task(shared_data: Path) -> None:
    cfg = DataConfig(layout="voc", root=shared_data / "voc_samples")
    with pytest.raises(DataError, match="data.layout: 'voc' does not hold binary data"):
        build_dataset(cfg, "binary", "val")


def test_semantic_dataset_needs_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of pairs and list_file"):
        SemanticSegDataset(tmp_path, num_classes=2)
