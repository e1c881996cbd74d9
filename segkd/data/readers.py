"""Reading images, masks and labels from disk, with errors that name the file and the problem."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The one list of image file suffixes: data layouts, prediction inputs and scored folders alike.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Modes whose pixel values are class indices (P: palette indices, L: grey levels, I: 32/16-bit).
INDEX_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L")


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
        # utf-8-sig drops the byte-order mark some Windows editors write, which would otherwise
        # become part of the first name and make its file "missing".
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc}); save it as UTF-8 text") from exc
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


# EXIF orientation tag values that rotate or mirror the stored pixels, and what each does.
EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {2: "mirrored left to right", 3: "rotated 180°", 4: "flipped upside down",
                 5: "mirrored and rotated 90° anticlockwise", 6: "rotated 90° clockwise",
                 7: "mirrored and rotated 90° clockwise", 8: "rotated 90° anticlockwise"}


def _orientation_of(image: Image.Image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels are still readable as stored
        return 1
    return value if value in _ORIENTATIONS else 1


def exif_orientation(path: Path) -> int:
    """The EXIF orientation of ``path`` (1, upright as stored, when it has none or is unreadable)."""
    try:
        with Image.open(path) as image:
            return _orientation_of(image)
    except (OSError, SyntaxError, ValueError):
        return 1


def _upright(image: Image.Image, path: Path, notes: list[tuple[str, Path]] | None) -> Image.Image:
    """``image`` turned as its EXIF orientation says, i.e. as image viewers and annotation tools show it."""
    if _orientation_of(image) == 1:
        return image
    if notes is not None:
        notes.append(("exif", path))
    return ImageOps.exif_transpose(image)


def read_image(path: Path, notes: list[tuple[str, Path]] | None = None) -> np.ndarray:
    """An RGB image as an H×W×3 uint8 array, upright as its EXIF orientation says.

    16-bit grey images are scaled from 0-65535 (Pillow's own conversion would clip them to
    white); 32-bit integer and floating-point images, whose range is unknown, are refused.
    ``notes`` (when given) receives ``("exif" | "16-bit", path)`` for each such reading.
    """
    with _load(path, "image") as image:
        image = _upright(image, path, notes)
        if image.mode in ("I", "F"):
            kind = "32-bit integer" if image.mode == "I" else "floating-point"
            raise DataError(f"{path}: {kind} image (mode {image.mode}) has no known value range; "
                            "save it as an 8- or 16-bit image")
        if image.mode.startswith("I;16"):
            if notes is not None:
                notes.append(("16-bit", path))
            grey = np.rint(np.asarray(image, dtype=np.float64) * (255 / 65535)).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
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


def grey_levels(image: Image.Image, path: Path, what: str = "mask",
                notes: list[tuple[str, Path]] | None = None) -> np.ndarray:
    """H×W uint8 grey levels of a decoded mask, by the rules below.

    - Palette masks whose indices are 0/1 are read by their indices, whatever the colours.
    - Transparency: a mask whose alpha is constant is read by its colour; one whose colour is
      constant, by its alpha (the object drawn as opaque pixels); one where both vary is read
      when they mark the same pixels and refused when they do not.
    - 16- and 32-bit integer masks: values up to 255 (an 8-bit mask saved in a wider file, 0/1
      included) are read as they are; wider values are scaled from 0-65535.
    - Floating-point masks: values in [0, 1] are scaled to 0-255; others are refused.
    """
    if image.has_transparency_data:
        return _alpha_or_colour(image, path, what, notes)
    if image.mode == "P" and int(np.asarray(image).max(initial=0)) == 1:
        # a 0/1 palette mask (the VOC palette draws index 1 dark red, grey level 38): its indices
        return np.array(image)
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;16"):
        return _wide_grey(np.asarray(image), path, what, notes)
    return np.array(image.convert("L"))


def _alpha_or_colour(image: Image.Image, path: Path, what: str,
                     notes: list[tuple[str, Path]] | None) -> np.ndarray:
    rgba = image.convert("RGBA")
    colour = np.array(rgba.convert("L"))
    alpha = np.array(rgba.getchannel("A"))
    if alpha.min() == alpha.max():
        return colour
    if colour.min() == colour.max():
        if notes is not None:
            notes.append(("alpha", path))
        return alpha
    if (binarize_mask(colour) == binarize_mask(alpha)).all():
        return colour
    raise DataError(f"{path}: {what} has colours and transparency (alpha) that mark different pixels; "
                    "save it as a grey PNG, object white on black")


def _wide_grey(values: np.ndarray, path: Path, what: str, notes: list[tuple[str, Path]] | None) -> np.ndarray:
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if values.dtype.kind == "f":
        if not (0 <= low and high <= 1):
            raise DataError(f"{path}: floating-point {what} holds values in [{low:g}, {high:g}]; "
                            "expected [0, 1] (or save it as an 8-bit grey PNG)")
        return np.rint(values * 255.0).astype(np.uint8)
    if low < 0 or high > 65535:
        raise DataError(f"{path}: {what} holds values in [{low}, {high}], beyond 16 bits; "
                        "save it as an 8-bit grey PNG")
    if high <= 255:
        return values.astype(np.uint8)
    if notes is not None:
        notes.append(("16-bit", path))
    return np.rint(values.astype(np.float64) * (255 / 65535)).astype(np.uint8)


def read_grey(path: Path, what: str = "mask", notes: list[tuple[str, Path]] | None = None) -> np.ndarray:
    """A single-channel H×W uint8 array of the grey levels of ``path`` (see :func:`grey_levels`)."""
    with _load(path, what) as image:
        return grey_levels(_upright(image, path, notes), path, what, notes)


def read_binary_mask(path: Path, notes: list[tuple[str, Path]] | None = None) -> np.ndarray:
    """A binary mask as an H×W uint8 array in {0, 1}, by :func:`binarize_mask`'s rule."""
    return binarize_mask(read_grey(path, notes=notes))


def read_label(path: Path, notes: list[tuple[str, Path]] | None = None) -> np.ndarray:
    """A semantic label map as an H×W integer array of class indices.

    Palette PNGs (mode "P", the VOC format) hold the indices behind the colours; grey PNGs hold
    them as grey levels. Colour (RGB) label images are refused: their colours are not indices.
    """
    with _load(path, "label") as image:
        image = _upright(image, path, notes)
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
    """Raise ``DataError`` naming both files if the mask's H×W differs from the image's.

    Both are compared upright (EXIF orientation applied); when the image's EXIF orientation is
    what makes them differ, the message says so rather than blaming a mis-sized mask.
    """
    if image.shape[:2] == mask.shape[:2]:
        return
    message = (f"{sample.mask}: mask size {_hw(mask)} differs from image {sample.image} size "
               f"{_hw(image)} (H×W)")
    orientation = exif_orientation(sample.image)
    if orientation != 1:
        stored = image.shape[1::-1] if orientation >= 5 else image.shape[:2]
        message += (f" as shown upright: the image's EXIF orientation {orientation} "
                    f"({_ORIENTATIONS[orientation]}) turns its stored {stored[0]}×{stored[1]} pixels")
        if tuple(mask.shape[:2]) == tuple(stored):
            message += ("; the mask fits the stored pixels, not the photo as viewers show it: save the "
                        "image upright (without the orientation tag) or the mask turned to match")
    raise DataError(message)


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}×{array.shape[1]}"
