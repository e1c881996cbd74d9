"""Reading images, masks and labels from disk, with errors that name the file and the problem."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
# Modes whose pixel values are class indices (P: palette indices, L: grey levels, I: 32/16-bit).
INDEX_MODES = ("P", "L", "I", "I;16")


class DataError(Exception):
    """A data problem: a missing, unreadable or inconsistent file. The message names the file."""


@dataclass(frozen=True)
class SamplePaths:
    """Where one sample lives on disk; ``name`` (the image's stem) names saved predictions."""

    name: str
    image: Path
    mask: Path


@dataclass
class Listing:
    """The samples a split lists, and the problems met while listing them (one line each)."""

    samples: list[SamplePaths] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def raise_if_problems(self, limit: int = 20) -> None:
        """Raise ``DataError`` quoting up to ``limit`` problems."""
        if not self.problems:
            return
        shown = self.problems[:limit]
        more = len(self.problems) - len(shown)
        tail = f"\n... and {more} more (run `segkd check-data` for all)" if more else ""
        raise DataError("\n".join(shown) + tail)


def read_list_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a list file as ``(line_number, stripped_text)``.

    Raises:
        DataError: the file is missing, unreadable or lists nothing.
    """
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc})") from exc
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line]
    if not lines:
        raise DataError(f"{path}: list file is empty")
    return lines


def _load(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` so truncated files fail here rather than later."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Pillow reports corrupt data through several exception types.
        raise DataError(f"{path}: cannot read {what} ({exc})") from exc
    return image


def read_image(path: Path) -> np.ndarray:
    """An RGB image as an H×W×3 uint8 array."""
    with _load(path, "image") as image:
        return np.array(image.convert("RGB"))


# The one rule for reading binary masks, used by training, evaluation and folder scoring alike.
# Many COD/SOD releases store masks as 0/1 rather than 0/255; read at the usual ">= 128" they
# would be all background, so a mask whose largest value is 1 is taken as a 0/1 mask.
BINARY_THRESHOLD = 128


def mask_convention(grey: np.ndarray) -> str:
    """``"0/1"`` when the largest grey level is 1, else ``"0/255"`` (thresholded at 128)."""
    return "0/1" if int(grey.max(initial=0)) == 1 else "0/255"


def binarize_mask(grey: np.ndarray) -> np.ndarray:
    """H×W grey levels → uint8 {0, 1}: a 0/1 mask as is, any other at ``>= 128``."""
    if mask_convention(grey) == "0/1":
        return (grey == 1).astype(np.uint8)
    return (grey >= BINARY_THRESHOLD).astype(np.uint8)


def read_grey(path: Path, what: str = "mask") -> np.ndarray:
    """A single-channel H×W uint8 array of the grey levels of ``path``."""
    with _load(path, what) as image:
        return np.array(image.convert("L"))


def read_binary_mask(path: Path) -> np.ndarray:
    """A binary mask as an H×W uint8 array in {0, 1}, by :func:`binarize_mask`'s rule."""
    return binarize_mask(read_grey(path))


def read_label(path: Path) -> np.ndarray:
    """A semantic label map as an H×W integer array of class indices.

    Palette PNGs (mode "P", the VOC format) hold the indices behind the colours; grey PNGs hold
    them as grey levels. Colour (RGB) label images are refused: their colours are not indices.
    """
    with _load(path, "label") as image:
        if image.mode not in INDEX_MODES:
            raise DataError(
                f"{path}: label image has mode {image.mode}; expected class indices "
                f"(palette 'P' or grey 'L' PNG)"
            )
        label = np.array(image)
    return label if label.dtype == np.uint8 else label.astype(np.int64)


def invalid_label_values(label: np.ndarray, num_classes: int, ignore_index: int) -> list[int]:
    """Sorted values of ``label`` outside ``[0, num_classes) ∪ {ignore_index}``."""
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_index)
    return [int(value) for value in np.unique(label[bad])] if bad.any() else []


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, path: Path) -> None:
    """Raise ``DataError`` naming ``path`` and the offending values if any is not a valid id."""
    values = invalid_label_values(label, num_classes, ignore_index)
    if values:
        raise DataError(
            f"{path}: label values {values} outside [0, {num_classes}) and not the ignore "
            f"index {ignore_index}"
        )


def check_same_size(image: np.ndarray, mask: np.ndarray, sample: SamplePaths) -> None:
    """Raise ``DataError`` naming both files if the mask's H×W differs from the image's."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{sample.mask}: mask size {_hw(mask)} differs from image {sample.image} size "
            f"{_hw(image)} (H×W)"
        )


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}×{array.shape[1]}"
