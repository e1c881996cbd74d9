"""Check a data set before training: report every problem at once, one line per problem."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from segkd.data.build import list_samples, split_file_name
from segkd.data.config import DataConfig, Split, Task
from segkd.data.layouts import LAYOUTS, LabelMap
from segkd.data.readers import (
    DataError,
    SamplePaths,
    check_label_values,
    check_same_size,
    mask_convention,
    read_binary_mask,
    read_grey,
    read_image,
    read_label,
)

__all__ = ["DataError", "check_data"]


def _inspect(sample: SamplePaths, task: Task, num_classes: int, ignore_index: int,
             label_map: LabelMap | None = None) -> list[str]:
    """Every problem of one sample: unreadable files, size mismatch, invalid label values."""
    problems: list[str] = []
    try:
        image = read_image(sample.image)
    except DataError as exc:
        problems.append(str(exc))
        image = None
    try:
        mask = read_binary_mask(sample.mask) if task == "binary" else read_label(sample.mask)
        if label_map is not None and task == "semantic":
            mask = label_map(mask, sample.mask)
    except DataError as exc:
        problems.append(str(exc))
        return problems
    checks = [] if image is None else [partial(check_same_size, image, mask, sample)]
    if task == "semantic":
        checks.append(partial(check_label_values, mask, num_classes, ignore_index, sample.mask))
    for check in checks:
        try:
            check()
        except DataError as exc:
            problems.append(str(exc))
    return problems


def check_data(
    cfg: DataConfig, task: Task, splits: Sequence[Split] | None = None,
    summary: DataSummary | None = None,
) -> list[str]:
    """All problems of the configured data, each a line naming the file and the problem.

    Looks for: missing or empty list files, listed names without an image or a mask, unreadable
    or corrupt files, masks whose size differs from their image, and (semantic) label values
    outside ``[0, num_classes) ∪ {ignore_index}``. Files are decoded on several threads.

    Args:
        splits: ``"train"`` and/or ``"val"``; default both.
        summary: when given, filled with the image count of each split and the binary mask
            conventions met (see :class:`DataSummary`).

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
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for sample_problems in pool.map(inspect, listing.samples):
                problems.extend(sample_problems)
            if summary is not None:
                _summarise(summary, pool, listing.samples, split_file_name(cfg, task, split), task)
    # Train and val may list the same files; report each problem once.
    return list(dict.fromkeys(problems))


@dataclass
class DataSummary:
    """What ``check_data`` saw: images per split and, for binary masks, the label convention."""

    images: dict[str, int] = field(default_factory=dict)  # split list name → listed samples
    conventions: dict[str, Counter[str]] = field(default_factory=dict)  # split → {"0/255": n, ...}

    def lines(self, task: Task) -> list[str]:
        out = []
        for split, count in self.images.items():
            line = f"{split}: {count} image(s)"
            conv = self.conventions.get(split)
            if task == "binary" and conv:
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(conv.items()))
                line += f"; masks {kinds}"
            out.append(line)
        if task == "binary":
            out.append("binary masks: a mask whose largest value is 1 is read as 0/1, any other "
                       "is foreground where >= 128")
        else:
            out.append("semantic labels: pixel values are class ids (palette or grey PNG)")
        return out


def _convention(sample: SamplePaths) -> str | None:
    try:
        return mask_convention(read_grey(sample.mask))
    except DataError:  # already reported by _inspect
        return None


def _summarise(summary: DataSummary, pool: ThreadPoolExecutor, samples: list[SamplePaths],
               split_name: str, task: Task) -> None:
    summary.images[split_name] = len(samples)
    if task == "binary":
        summary.conventions[split_name] = Counter(c for c in pool.map(_convention, samples) if c)
