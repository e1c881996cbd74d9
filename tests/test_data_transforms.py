from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from segkd.data import DataConfig, build_eval_transform, build_train_transform
from segkd.data.transforms import RandomTrimCrop, resize_batch, to_tv_tensors

MEAN = (100.0, 100.0, 100.0)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def _blocks(height: int, width: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Label of 3 classes in square blocks and an image whose colour channel = the class."""
    rows, cols = np.mgrid[:height, :width]
    label = ((rows // block + 2 * (cols // block)) % 3).astype(np.uint8)
    return COLOURS[label], label


def _cfg(**overrides: object) -> DataConfig:
    return DataConfig(mean=MEAN, std=(1.0, 1.0, 1.0), **overrides)


def _run(transform, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    out_image, out_mask = transform(*to_tv_tensors(image, mask))
    # Undo the normalisation (std 1) to compare against the 0-255 colours.
    return out_image + torch.tensor(MEAN)[:, None, None], out_mask[0]


def test_semantic_flip_and_crop_keep_pixels_aligned_exactly() -> None:
    image, label = _blocks(48, 64, 8)
    transform = build_train_transform(
        "semantic", _cfg(crop_size=40, scale_range=(1.0, 1.0), rotate=(0.0, 0.0), blur=False)
    )
    for seed in range(6):
        torch.manual_seed(seed)
        out_image, out_mask = _run(transform, image, label)
        assert out_image.shape == (3, 40, 40) and out_mask.shape == (40, 40)
        assert torch.equal(out_image.argmax(0), out_mask.long())


def test_semantic_full_pipeline_keeps_image_and_label_aligned() -> None:
    image, label = _blocks(64, 64, 16)
    transform = build_train_transform("semantic", _cfg(crop_size=57, scale_range=(0.75, 1.5)))
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = _run(transform, image, label)
        assert out_image.shape == (3, 57, 57) and out_mask.shape == (57, 57)
        valid = out_mask != 255
        agree = (out_image.argmax(0) == out_mask.long())[valid].float().mean().item()
        # Bilinear images and nearest labels differ only near block edges; a missed flip or a
        # shifted crop would drop this to about 1/3.
        assert agree > 0.95, f"seed {seed}: only {agree:.3f} of pixels agree"


def test_padding_fills_label_with_ignore_and_image_with_mean() -> None:
    image, label = _blocks(20, 30, 5)
    transform = build_train_transform(
        "semantic",
        _cfg(crop_size=41, scale_range=(1.0, 1.0), rotate=(0.0, 0.0), blur=False, flip=False),
    )
    torch.manual_seed(0)
    out_image, out_mask = _run(transform, image, label)
    # Padding is split equally: (41 - 20) // 2 = 10 rows on top, (41 - 30) // 2 = 5 columns left.
    inside = torch.zeros(41, 41, dtype=torch.bool)
    inside[10:30, 5:35] = True
    assert torch.equal(out_mask[inside].reshape(20, 30), torch.from_numpy(label))
    assert bool((out_mask[~inside] == 255).all())
    assert torch.allclose(out_image[:, ~inside], torch.tensor(MEAN)[:, None])


def test_rotation_borders_are_ignore_and_mean() -> None:
    image, label = _blocks(40, 40, 10)
    transform = build_train_transform(
        "semantic",
        _cfg(crop_size=40, scale_range=(1.0, 1.0), rotate=(10.0, 10.0), blur=False, flip=False),
    )
    rotated = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = _run(transform, image, label)
        if out_mask[0, 0] == 255:
            rotated += 1
            assert torch.allclose(out_image[:, 0, 0], torch.tensor(MEAN))
        else:
            assert torch.equal(out_mask, torch.from_numpy(label))  # p 0.5: left untouched
    assert 0 < rotated < 8


def test_train_transform_is_reproducible_with_a_seed() -> None:
    image, label = _blocks(50, 60, 7)
    transform = build_train_transform("semantic", _cfg(crop_size=33))
    torch.manual_seed(3)
    first = _run(transform, image, label)
    torch.manual_seed(3)
    second = _run(transform, image, label)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_binary_train_transform_aligned_and_binary() -> None:
    rows, cols = np.mgrid[:60, :80]
    mask = (((rows // 12) + (cols // 12)) % 2).astype(np.uint8)
    image = np.repeat((mask * 255)[..., None], 3, axis=2).astype(np.uint8)
    transform = build_train_transform("binary", _cfg(train_size=48))
    for seed in range(6):
        torch.manual_seed(seed)
        out_image, out_mask = _run(transform, image, mask)
        assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
        assert set(out_mask.unique().tolist()) <= {0, 1}
        agree = ((out_image[0] > 127.5) == (out_mask == 1)).float().mean().item()
        assert agree > 0.99  # plain nearest for the mask would fall to about 0.9 here


def test_trim_crop_removes_at_most_an_eighth_and_crops_both_alike() -> None:
    rows, cols = np.mgrid[:64, :96]
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.uint8)
    mask = ((rows + cols) % 2).astype(np.uint8)
    crop = RandomTrimCrop(1 / 8)
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = crop(*to_tv_tensors(image, mask))
        height, width = out_image.shape[-2:]
        assert 64 - 8 <= height <= 64 and 96 - 12 <= width <= 96
        expected = (out_image[0] + out_image[1]).long() % 2
        assert torch.equal(out_mask[0].long(), expected)


def test_binary_eval_resizes_image_only() -> None:
    image = np.full((30, 50, 3), 124, dtype=np.uint8)
    mask = np.ones((30, 50), dtype=np.uint8)
    cfg = DataConfig(test_size=32)
    out_image, out_mask = build_eval_transform("binary", cfg)(*to_tv_tensors(image, mask))
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (1, 30, 50)
    mean, std = cfg.normalization("binary")
    assert out_image[0, 3, 4].item() == pytest.approx((124 - mean[0]) / std[0], abs=1e-4)


def test_semantic_eval_keeps_full_resolution() -> None:
    image, label = _blocks(30, 50, 5)
    out_image, out_mask = _run(build_eval_transform("semantic", _cfg()), image, label)
    assert out_image.shape == (3, 30, 50)
    assert torch.equal(out_mask, torch.from_numpy(label))
    assert torch.allclose(out_image, torch.from_numpy(image).permute(2, 0, 1).float())


@pytest.mark.parametrize("side", [16, 24])
def test_resize_batch_resizes_whole_binary_batch(side: int) -> None:
    batch = {"image": torch.rand(3, 3, 40, 40), "mask": (torch.rand(3, 1, 40, 40) > 0.5).float(),
             "name": ["s0", "s1", "s2"]}
    resized = resize_batch(batch, side)
    assert resized["image"].shape == (3, 3, side, side)
    assert resized["mask"].shape == (3, 1, side, side)
    assert set(resized["mask"].unique().tolist()) <= {0.0, 1.0}
    assert resized["name"] == ["s0", "s1", "s2"]
    assert batch["image"].shape == (3, 3, 40, 40)  # the input batch is left as it was


def test_resize_batch_handles_semantic_masks() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.int64)
    mask[:, :, 4:] = 255
    batch = resize_batch({"image": torch.rand(1, 3, 8, 8), "mask": mask, "name": ["a"]}, 16)
    assert batch["mask"].shape == (1, 16, 16) and batch["mask"].dtype == torch.int64
    assert torch.equal(batch["mask"][0, :, 8:], torch.full((16, 8), 255))
    assert bool((batch["mask"][0, :, :8] == 0).all())


def test_to_tv_tensors_shapes() -> None:
    image, mask = to_tv_tensors(np.zeros((5, 7, 3), np.uint8), np.zeros((5, 7), np.uint8))
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.shape == (3, 5, 7) and image.dtype == torch.float32 and mask.shape == (1, 5, 7)
