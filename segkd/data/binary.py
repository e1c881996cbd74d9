"""Binary object segmentation data (salient / camouflaged objects) in the SOD layout.

Layout::

    ROOT/Image/NAME.jpg   (or .png, .jpeg, .bmp, .tif, .webp; the folder may be called image/)
    ROOT/Mask/NAME.png    (grey masks, 0/255 (>= 128 is foreground) or 0/1; the folder may be mask/)
    ROOT/{split}.txt      (one NAME per line, without extension)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from segkd.data.readers import (
    IMAGE_SUFFIXES,
    DataError,
    Listing,
    SamplePaths,
    check_same_size,
    read_binary_mask,
    read_image,
    read_list_lines,
)
from segkd.data.transforms import JointTransform, to_tv_tensors


def _find_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """``{stem: [paths]}`` of the image files of ``folder``, from one directory scan, sorted."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, []).append(path)
    return found


def _ambiguous(name: str, paths: list[Path], role: str) -> str:
    # Which of a.jpg and a.png is meant cannot be told; `segkd eval --pred` refuses the same.
    return (f"{paths[0].parent / name}.*: {role} name '{name}' is ambiguous: "
            f"{' and '.join(path.name for path in paths)}; keep one")


def list_binary_samples(root: Path | str, split: str) -> Listing:
    """Pair every name in ``ROOT/{split}.txt`` with its image and mask.

    Names without an image or a mask, or with two (``a.jpg`` and ``a.png``), become problems of
    the returned listing.

    Raises:
        DataError: the list file is missing or empty, or an image/mask folder is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (data.root)")
    names = [line for _, line in read_list_lines(root / f"{split}.txt")]
    image_dir = _find_folder(root, ("Image", "image"))
    mask_dir = _find_folder(root, ("Mask", "mask"))
    missing = [f"{root / name}: folder not found (also tried {name.lower()}/)"
               for name, folder in (("Image", image_dir), ("Mask", mask_dir)) if folder is None]
    if missing:
        raise DataError("\n".join(missing))
    assert image_dir is not None and mask_dir is not None
    images, masks = _files_by_stem(image_dir), _files_by_stem(mask_dir)
    listing = Listing()
    for name in names:
        image, mask = images.get(name, []), masks.get(name, [])
        if not image:
            listing.problems.append(
                f"{image_dir / name}.*: no image for '{name}' listed in {root / split}.txt"
            )
        if not mask:
            listing.problems.append(
                f"{mask_dir / name}.png: no mask for '{name}' listed in {root / split}.txt"
            )
        listing.problems += [_ambiguous(name, paths, role)
                             for role, paths in (("image", image), ("mask", mask)) if len(paths) > 1]
        if len(image) == 1 and len(mask) == 1:
            listing.samples.append(SamplePaths(name, image[0], mask[0]))
    return listing


class BinarySegDataset(Dataset[dict[str, Any]]):
    """Images and binary masks listed by ``ROOT/{split}.txt``.

    Each item is ``{"image": float32 3×H×W, "mask": float32 1×H×W in {0, 1}, "name": str}``.
    Without a transform the image holds raw 0-255 RGB values; the segkd transforms normalise it
    and crop/resize both (the evaluation transform keeps the mask at full resolution).

    Raises:
        DataError: at construction if the list or any listed file is missing; at load time if a
            file is unreadable or a mask's size differs from its image's.
    """

    def __init__(
        self, root: Path | str, split: str, transform: JointTransform | None = None,
        *, listing: Listing | None = None,
    ) -> None:
        """``listing``: the samples to read instead of ``ROOT/{split}.txt``'s (e.g. one side of a
        held-out split); ``split`` then only names the set."""
        self.root = Path(root)
        self.split = split
        self.transform = transform
        listing = list_binary_samples(self.root, split) if listing is None else listing
        listing.raise_if_problems()
        self.samples = listing.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image_array, mask_array = read_image(sample.image), read_binary_mask(sample.mask)
        check_same_size(image_array, mask_array, sample)
        image, mask = to_tv_tensors(image_array, mask_array)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {
            "image": image.as_subclass(torch.Tensor),
            "mask": mask.as_subclass(torch.Tensor).to(torch.float32),
            "name": sample.name,
        }

    def __repr__(self) -> str:
        return f"BinarySegDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
