"""Check a data set before training: report every problem at once, one line per problem."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from segkd.data.build import list_samples, split_file_name
from segkd.data.config import DataConfig, Split, Task
from segkd.data.layouts import LAYOUTS, LabelMap
from segkd.data.readers import (
    DataError,
    SamplePaths,
    binarize_mask,
    check_label_values,
    check_same_size,
    mask_convention,
    read_grey,
    read_image,
    read_label,
)

__all__ = ["DataError", "check_data"]


@dataclass
class _Inspection:
    """What reading one sample found: its problems, how its files were read, its mask convention."""

    problems: list[str] = field(default_factory=list)
    notes: list[tuple[str, Path]] = field(default_factory=list)  # (kind, file): see DataSummary
    convention: str | None = None  # binary masks: "0/1" or "0/255"


def _inspect(sample: SamplePaths, task: Task, num_classes: int, ignore_index: int,
             label_map: LabelMap | None = None) -> _Inspection:
    """Every problem of one sample: unreadable files, size mismatch, invalid label values."""
    found = _Inspection()
    problems = found.problems
    try:
        image = read_image(sample.image, found.notes)
    except DataError as exc:
        problems.append(str(exc))
        image = None
    try:
        if task == "binary":
            grey = read_grey(sample.mask, notes=found.notes)
            found.convention = mask_convention(grey)
            mask = binarize_mask(grey)
        else:
            mask = read_label(sample.mask, found.notes)
        if label_map is not None and task == "semantic":
            mask = label_map(mask, sample.mask)
    except DataError as exc:
        problems.append(str(exc))
        return found
    checks = [] if image is None else [partial(check_same_size, image, mask, sample)]
    if task == "semantic":
        checks.append(partial(check_label_values, mask, num_classes, ignore_index, sample.mask))
    for check in checks:
        try:
            check()
        except DataError as exc:
            problems.append(str(exc))
    return found


def check_data(
    cfg: DataConfig, task: Task, splits: Sequence[Split] | None = None,
    summary: DataSummary | None = None,
) -> list[str]:
    """All problems of the configured data, each a line naming the file and the problem.

    Looks for: missing or empty list files, listed names without an image or a mask or with two
    (``a.jpg`` and ``a.png``), unreadable or corrupt files, images or masks whose values cannot be
    read right (32-bit or float photos, masks whose colour and transparency disagree), masks
    whose size differs from their image (naming the image's EXIF orientation when that is the
    cause), and (semantic) label values outside ``[0, num_classes) ∪ {ignore_index}``. Files are
    decoded on several threads.

    Args:
        splits: ``"train"`` and/or ``"val"``; default both.
        summary: when given, filled with the image count of each split, the binary mask
            conventions met and the files read in an unusual way: turned upright by their EXIF
            orientation, scaled from 16 bits, read from their alpha (see :class:`DataSummary`).

    Returns:
        The problems (empty when the data is fine), in list order, without repeats.

    Example:
        >>> for line in check_data(cfg, "semantic"):
        ...     print(line)
    """
    problems: list[str] = []
    layout = LAYOUTS.get(cfg.layout)
    inspect = partial(
        _inspect, task=task, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index,
        label_map=layout.label_map if layout is not None else None,
    )
    workers = min(16, (os.cpu_count() or 1) * 2)
    for split in splits or ("train", "val"):
        try:
            listing = list_samples(cfg, task, split)
        except DataError as exc:
            problems.extend(str(exc).splitlines())
            continue
        problems.extend(listing.problems)
        split_name = split_file_name(cfg, task, split)
        if summary is not None:
            summary.images[split_name] = len(listing.samples)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for found in pool.map(inspect, listing.samples):
                problems.extend(found.problems)
                if summary is not None:
                    summary.add(split_name, found)
    # Train and val may list the same files; report each problem once.
    return list(dict.fromkeys(problems))


# How files were read that a user may not expect, by kind: the line check-data prints for each.
_READING_NOTES = {
    "exif": "file(s) carry an EXIF orientation and are read turned upright, as viewers show them",
    "16-bit": "16-bit file(s) are read scaled from 0-65535 to 0-255",
    "alpha": "mask(s) of one colour are read from their transparency (alpha): opaque pixels are the object",
}


@dataclass
class DataSummary:
    """What ``check_data`` saw: images per split, binary mask conventions, unusual readings."""

    images: dict[str, int] = field(default_factory=dict)  # split list name → listed samples
    conventions: dict[str, Counter[str]] = field(default_factory=dict)  # split → {"0/255": n, ...}
    readings: dict[str, list[Path]] = field(default_factory=dict)  # kind of _READING_NOTES → files

    def add(self, split_name: str, found: _Inspection) -> None:
        if found.convention is not None:
            self.conventions.setdefault(split_name, Counter())[found.convention] += 1
        for kind, path in found.notes:
            files = self.readings.setdefault(kind, [])
            if path not in files:  # train and val may list the same files
                files.append(path)

    def lines(self, task: Task) -> list[str]:
        out = []
        for split, count in self.images.items():
            line = f"{split}: {count} image(s)"
            conv = self.conventions.get(split)
            if task == "binary" and conv:
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(conv.items()))
                line += f"; masks {kinds}"
            out.append(line)
        out += [f"note: {len(files)} {_READING_NOTES[kind]} (e.g. {files[0]})"
                for kind, files in self.readings.items()]
        if task == "binary":
            out.append("binary masks: a mask whose largest value is 1 is read as 0/1, any other "
                       "is foreground where >= 128")
        else:
            out.append("semantic labels: pixel values are class ids (palette or grey PNG)")
        return out
