"""A small generated data set of textured shapes on textured backgrounds, for both tasks.

binary: one to three shapes of any type in random colours; the mask is their union. Written in
the SOD layout (``Image/*.png``, ``Mask/*.png``, ``train.txt``, ``test.txt``).

semantic: class 0 is the background and class k > 0 is one shape type drawn with its own colour
family and texture, so the class is learnable from shape and appearance but colours of
neighbouring families overlap. A 2-pixel band on every class boundary is labelled 255 (ignore),
as in VOC. Written as RGB ``images/*.png``, palette ``labels/*.png`` and the semseg lists
``train.txt`` / ``val.txt``.
"""
from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from segkd.data.classes import voc_palette
from segkd.data.config import SYNTHETIC_CLASSES

FORMAT_VERSION = 1
PARAMS_FILE = "synthetic.json"
SHAPES: tuple[str, ...] = SYNTHETIC_CLASSES[1:]
TEXTURES: tuple[str, ...] = ("noise", "stripes", "gradient", "checker")

Grid = tuple[np.ndarray, np.ndarray]  # (y, x) pixel coordinates, each H×W float


def _shape_mask(kind: str, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Boolean H×W mask of one randomly placed, sized and rotated shape."""
    y, x = grid
    size = y.shape[0]
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    radius = rng.uniform(0.12, 0.28) * size
    angle = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    aspect = rng.uniform(0.4, 0.7)
    if kind == "circle":
        return u**2 + v**2 <= radius**2
    if kind == "rectangle":
        return (np.abs(u) <= radius) & (np.abs(v) <= radius * rng.uniform(0.5, 1.0))
    if kind == "triangle":
        normals = [angle + k * 2 * np.pi / 3 for k in range(3)]
        inside = [(x - cx) * np.cos(a) + (y - cy) * np.sin(a) <= radius / 2 for a in normals]
        return inside[0] & inside[1] & inside[2]
    if kind == "ellipse":
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1
    if kind == "ring":
        distance = np.sqrt(u**2 + v**2)
        return (distance <= radius) & (distance >= 0.55 * radius)
    if kind == "diamond":
        return np.abs(u) / radius + np.abs(v) / (radius * aspect) <= 1
    raise ValueError(f"unknown shape '{kind}'; available: {', '.join(SHAPES)}")


def _texture(kind: str, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """H×W float pattern in about [−1, 1]."""
    y, x = grid
    size = y.shape[0]
    angle = rng.uniform(0, np.pi)
    along = (x * np.cos(angle) + y * np.sin(angle)) / size
    if kind == "noise":
        return rng.uniform(-1, 1, size=y.shape)
    if kind == "stripes":
        return np.sin(2 * np.pi * rng.uniform(3, 8) * along + rng.uniform(0, 2 * np.pi))
    if kind == "gradient":
        return 2 * (along - along.min()) / max(np.ptp(along), 1e-6) - 1
    if kind == "checker":
        cell = rng.uniform(4, 10)
        return np.where((np.floor(x / cell) + np.floor(y / cell)) % 2 == 0, 1.0, -1.0)
    raise ValueError(f"unknown texture '{kind}'; available: {', '.join(TEXTURES)}")


def _paint(
    grid: Grid, rng: np.random.Generator, hue: float, saturation: float, texture: str
) -> np.ndarray:
    """H×W×3 float RGB (0-255): a base colour modulated by a texture plus pixel noise."""
    base = np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, rng.uniform(0.45, 0.9))) * 255
    pattern = _texture(texture, grid, rng)[..., None] * rng.uniform(20, 50)
    return base + pattern + rng.normal(0, 6, size=(*grid[0].shape, 3))


def _render(
    task: str, size: int, num_classes: int, rng: np.random.Generator,
    label_noise: float = 0.0, noise_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: H×W×3 uint8 image and H×W uint8 mask (binary 0/255, semantic class ids).

    With ``label_noise`` p, each shape is mislabelled with probability p (semantic: as another
    shape class; binary: left out of the mask), drawn from ``noise_rng``, so the image is the same
    at every noise level."""
    coords = np.arange(size, dtype=np.float64)
    grid: Grid = tuple(np.meshgrid(coords, coords, indexing="ij"))  # type: ignore[assignment]
    image = _paint(grid, rng, rng.uniform(), rng.uniform(0.0, 0.6), str(rng.choice(TEXTURES)))
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        if task == "binary":
            region = _shape_mask(str(rng.choice(SHAPES)), grid, rng)
            texture = str(rng.choice(TEXTURES))
            paint = _paint(grid, rng, rng.uniform(), rng.uniform(0.4, 1.0), texture)
            # A missed object: painted, left out of the mask (annotators' omissions).
            missed = noise_rng is not None and noise_rng.random() < label_noise
            mask[region] = 0 if missed else 255
        else:
            cls = int(rng.integers(1, num_classes))
            region = _shape_mask(SHAPES[cls - 1], grid, rng)
            hue = (cls - 1) / (num_classes - 1) + rng.uniform(-0.08, 0.08)
            texture = TEXTURES[(cls - 1) % len(TEXTURES)]
            paint = _paint(grid, rng, hue, rng.uniform(0.45, 1.0), texture)
            mask[region] = cls
            if noise_rng is not None and num_classes > 2 and noise_rng.random() < label_noise:
                mask[region] = 1 + (cls - 1 + int(noise_rng.integers(1, num_classes - 1))) % (num_classes - 1)
        image[region] = paint[region]
    if task == "semantic":
        mask[_class_boundary(mask)] = 255
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _class_boundary(label: np.ndarray) -> np.ndarray:
    """Boolean H×W: pixels with a 4-neighbour of another class (both sides of each edge)."""
    edge = np.zeros(label.shape, dtype=bool)
    vertical, horizontal = label[1:] != label[:-1], label[:, 1:] != label[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _sample_files(root: Path, task: str, name: str) -> tuple[Path, Path]:
    """Where the image and the mask of sample ``name`` are written."""
    if task == "binary":
        return root / "Image" / f"{name}.png", root / "Mask" / f"{name}.png"
    return root / "images" / f"{name}.png", root / "labels" / f"{name}.png"


def _is_complete(root: Path, params: dict[str, object], splits: dict[str, int]) -> bool:
    try:
        if json.loads((root / PARAMS_FILE).read_text()) != params:
            return False
    except (OSError, ValueError):
        return False
    task = str(params["task"])
    return all((root / f"{split}.txt").is_file() for split in splits) and all(
        path.is_file()
        for split, count in splits.items()
        for index in range(count)
        for path in _sample_files(root, task, f"{split}_{index:04d}")
    )


def make_synthetic(
    root: Path | str,
    task: Literal["semantic", "binary"],
    *,
    num_train: int = 48,
    num_val: int = 16,
    image_size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    label_noise: float = 0.0,
) -> Path:
    """Generate the synthetic set for ``task`` under ``root`` (created if missing); return root.

    Idempotent: a complete set made with the same parameters (recorded in
    ``root/synthetic.json``) is reused as is. Deterministic: image ``i`` of a split depends only
    on ``(seed, split, i)`` and the size, so it does not change with the number of images.

    Args:
        num_classes: semantic only: classes including background, 2 to 7.
        label_noise: probability that a shape of a *training* image is mislabelled: as another
            shape class (semantic: annotators' class confusions) or left out of the mask (binary:
            missed objects); validation and test labels stay clean (a part held out of the training
            list with ``data.holdout`` keeps its noise).
    """
    if task not in ("semantic", "binary"):
        raise ValueError(f"task must be 'semantic' or 'binary', got {task!r}")
    if task == "semantic" and not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SYNTHETIC_CLASSES)}], got {num_classes}")
    root = Path(root)
    params: dict[str, object] = {
        "format": FORMAT_VERSION, "task": task, "num_train": num_train, "num_val": num_val,
        "image_size": image_size, "num_classes": num_classes if task == "semantic" else 1,
        "seed": seed,
    }  # fmt: skip
    if label_noise:
        params["label_noise"] = label_noise
        if task == "binary":  # sets of older versions recorded a binary label_noise and kept clean masks
            params["binary_noise"] = "missed objects"
    splits = {"train": num_train, "test" if task == "binary" else "val": num_val}
    if _is_complete(root, params, splits):
        return root
    (root / PARAMS_FILE).unlink(missing_ok=True)
    for folder in {path.parent for path in _sample_files(root, task, "x")}:
        folder.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for split_index, (split, count) in enumerate(splits.items()):
        lines = []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            noisy = split == "train" and label_noise > 0
            noise_rng = np.random.default_rng([seed, split_index, index, 1]) if noisy else None
            image, mask = _render(task, image_size, num_classes, rng, label_noise, noise_rng)
            lines.append(_write_sample(root, task, f"{split}_{index:04d}", image, mask, palette))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    # Written last and atomically: its presence marks the set as complete.
    temporary = root / f"{PARAMS_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(params, indent=2))
    os.replace(temporary, root / PARAMS_FILE)
    return root


def _write_sample(
    root: Path, task: str, name: str, image: np.ndarray, mask: np.ndarray, palette: list[int]
) -> str:
    """Save one sample; return its line in the split's list file."""
    image_path, mask_path = _sample_files(root, task, name)
    Image.fromarray(image).save(image_path)
    mask_image = Image.fromarray(mask)
    if task == "semantic":
        mask_image.putpalette(palette)  # turns the grey image into a palette image, same indices
    mask_image.save(mask_path)
    if task == "binary":
        return name
    return f"{image_path.relative_to(root).as_posix()} {mask_path.relative_to(root).as_posix()}"
