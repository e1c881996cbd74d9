"""Check a data set before training: report every problem at once, one line per problem."""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from segkd.data.build import list_samples
from segkd.data.config import DataConfig, Split, Task
from segkd.data.layouts import LAYOUTS, LabelMap
from segkd.data.readers import (
    DataError,
    SamplePaths,
    check_label_values,
    check_same_size,
    read_binary_mask,
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
    cfg: DataConfig, task: Task, splits: Sequence[Split] | None = None
) -> list[str]:
    """All problems of the configured data, each a line naming the file and the problem.

    Looks for: missing or empty list files, listed names without an image or a mask, unreadable
    or corrupt files, masks whose size differs from their image, and (semantic) label values
    outside ``[0, num_classes) ∪ {ignore_index}``. Files are decoded on several threads.

    Args:
        splits: ``"train"`` and/or ``"val"``; default both.

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
    # Train and val may list the same files; report each problem once.
    return list(dict.fromkeys(problems))
