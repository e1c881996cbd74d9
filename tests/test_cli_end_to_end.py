"""`segkd train` → `segkd eval` → `segkd predict` → `segkd eval --pred` on the real sample data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from segkd.cli import main


def _binary_subset(shared_data: Path, root: Path, train: int = 6, test: int = 3) -> list[str]:
    source = shared_data / "sod300"
    names = {"train": (source / "train.txt").read_text().split()[:train],
             "test": (source / "test.txt").read_text().split()[:test]}
    for folder in ("Image", "Mask"):
        (root / folder).mkdir(parents=True)
    for split, split_names in names.items():
        (root / f"{split}.txt").write_text("\n".join(split_names) + "\n")
        for name in split_names:
            shutil.copy(next((source / "Image").glob(f"{name}.*")), root / "Image")
            shutil.copy(source / "Mask" / f"{name}.png", root / "Mask")
    return names["test"]


def _voc_subset(shared_data: Path, root: Path, train: int = 4, val: int = 2) -> list[str]:
    shutil.copytree(shared_data / "voc_samples", root)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    (root / "ImageSets" / "Segmentation" / "mini_train.txt").write_text("\n".join(names[:train]) + "\n")
    (root / "ImageSets" / "Segmentation" / "mini_val.txt").write_text("\n".join(names[train:train + val]) + "\n")
    return names[train:train + val]


def _train_eval_predict(tmp_path: Path, config_text: str, test_images: list[Path], gt_dir: Path,
                        extra_eval_args: list[str]) -> tuple[dict, dict]:
    config = tmp_path / "run.yaml"
    config.write_text(config_text)
    assert main(["train", str(config)]) == 0
    best = tmp_path / "run" / "last.pt"  # binary runs validated on the test split write no best.pt
    assert best.is_file()

    saved = tmp_path / "saved"
    assert main(["eval", "--checkpoint", str(best), "--save-dir", str(saved),
                 "--output", str(tmp_path / "eval.json")]) == 0
    checkpoint_metrics = json.loads((tmp_path / "eval.json").read_text())

    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(str(p) for p in test_images) + "\n")
    predictions = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(best), "--input", str(listing), "--output", str(predictions)]) == 0
    for image in test_images:
        written = predictions / f"{image.stem}.png"
        assert written.is_file(), f"no prediction for {image.name}"
        assert Image.open(written).size == Image.open(image).size  # full resolution, not the network's size

    assert main(["eval", "--pred", str(predictions), "--gt", str(gt_dir), *extra_eval_args,
                 "--output", str(tmp_path / "folder.json")]) == 0
    return checkpoint_metrics, json.loads((tmp_path / "folder.json").read_text())


def test_binary_train_eval_predict_on_sod300(tmp_path, shared_data):
    root = tmp_path / "sod"
    test_names = _binary_subset(shared_data, root)
    config_text = f"""
task: binary
output_dir: {tmp_path / 'run'}
data: {{layout: binary, root: {root}, train_size: 64, multiscale_sizes: [], test_size: 64,
        batch_size: 3, num_workers: 0}}
model: {{name: fusion, backbone: resnet18, width: 8}}
train: {{epochs: 1, progress: false, log_every: 1}}
"""
    images = [next((root / "Image").glob(f"{name}.*")) for name in test_names]
    gt = tmp_path / "gt"
    gt.mkdir()
    for name in test_names:  # score against the test masks only
        shutil.copy(root / "Mask" / f"{name}.png", gt)
    from_checkpoint, from_folder = _train_eval_predict(tmp_path, config_text, images, gt, [])
    assert from_folder["num_images"] == len(test_names)
    for metrics in (from_checkpoint, from_folder["metrics"]):
        assert 0.0 <= metrics["MAE"] <= 1.0 and 0.0 <= metrics["Sm"] <= 1.0
    # the maps written by predict are those eval scored: PNG quantisation aside, the same MAE
    assert abs(from_folder["metrics"]["MAE"] - from_checkpoint["MAE"]) < 0.01
    prediction = np.asarray(Image.open(tmp_path / "pred" / f"{test_names[0]}.png"))
    assert prediction.ndim == 2 and prediction.dtype == np.uint8


def test_semantic_train_eval_predict_on_voc_samples(tmp_path, shared_data):
    root = tmp_path / "voc"
    val_names = _voc_subset(shared_data, root)
    config_text = f"""
task: semantic
output_dir: {tmp_path / 'run'}
data: {{layout: voc, root: {root}, train_split: mini_train, val_split: mini_val, crop_size: 65,
        base_size: 96, batch_size: 2, num_workers: 0}}
model: {{name: pspnet, backbone: resnet18, output_stride: 8}}
train: {{epochs: 1, progress: false, log_every: 1}}
eval: {{sliding: false}}
"""
    images = [root / "JPEGImages" / f"{name}.jpg" for name in val_names]
    gt = tmp_path / "gt"
    gt.mkdir()
    for name in val_names:
        shutil.copy(root / "SegmentationClass" / f"{name}.png", gt)
    from_checkpoint, from_folder = _train_eval_predict(tmp_path, config_text, images, gt, ["--num-classes", "21"])
    assert from_folder["num_images"] == len(val_names)
    # predict writes palette PNGs of class indices, which eval reads back as labels
    prediction = Image.open(tmp_path / "pred" / f"{val_names[0]}.png")
    assert prediction.mode == "P" and np.asarray(prediction).max() < 21
    assert (tmp_path / "pred" / "overlay" / f"{val_names[0]}.jpg").is_file()
    assert abs(from_folder["metrics"]["mIoU"] - from_checkpoint["mIoU"]) < 1e-6
