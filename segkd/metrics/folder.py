"""Evaluate a folder of saved predictions against a folder of ground-truth masks."""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkd.data.readers import IMAGE_SUFFIXES, INDEX_MODES, DataError, binarize_mask, read_grey
from segkd.metrics.sod import SODMetrics

_MAX_LISTED = 20
# Shards per worker process: several, so that a worker given large images does not finish last
# while the others wait.
_SHARDS_PER_WORKER = 4


class FolderError(DataError, ValueError):
    """Prediction or mask files that cannot be scored together; the message names the file."""


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    num_classes: int | None = None,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Score every ground-truth mask in ``gt_dir`` against the prediction of the same name.

    Files are paired by name with the extension aside (``x.png`` matches ``x.jpg``).

    - ``num_classes=None`` (binary task): predictions are read as grey maps on one scale (16-bit
      ones scaled from 0-65535, float ones as probabilities in [0, 1]; 32-bit integer ones are
      refused), masks by the package's one mask rule (:func:`segkd.data.readers.read_grey`, then
      :func:`segkd.data.readers.binarize_mask`: 0/1 or >= 128), and
      scored with :class:`SODMetrics`; a prediction of another size is resized bilinearly (the
      SOD convention) and counted in ``"resized"``.
    - ``num_classes=C`` (semantic task): both are label-id maps (palette PNG indices or grey
      values) scored with :class:`SegmentationMetric`; a prediction of another size is an error.

    Args:
        names: score only these names (e.g. the lines of a split's list file), for a mask folder
            that also holds the masks of other splits.
        workers: processes that score binary maps, each a run of consecutive files; their
            per-image records are merged in file order, so every number equals a one-process
            run. ``None``: one per available core; ``1``: in this process. Semantic maps are
            always scored in this process.

    Returns:
        ``{"task": "binary" | "semantic", "num_images": n, "resized": k, "metrics": {...}}``.

    Raises:
        FileNotFoundError: a folder is missing, ``gt_dir`` holds no images, or some masks have
            no prediction (all such names are listed).
        FolderError (a ValueError): a name appears twice with different extensions, a label map
            cannot be read as ids, has the wrong size, or labels are out of range (the file is
            named).

    A prediction with no mask is skipped with a warning naming it.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pred_files, gt_files = _paired_files(Path(pred_dir), Path(gt_dir), names)
    ordered = sorted(gt_files)
    if num_classes is None:
        pairs = [(pred_files[name], gt_files[name]) for name in ordered]
        return _evaluate_binary(pairs, workers or available_cores())
    return _evaluate_semantic(ordered, pred_files, gt_files, num_classes, ignore_index, class_names)


def _paired_files(pred_dir: Path, gt_dir: Path, names: Sequence[str] | None) -> tuple[dict[str, Path], dict[str, Path]]:
    """``({name: prediction}, {name: mask})`` of the masks to score (all, or ``names``), every one
    with its prediction; a prediction without a mask is skipped with a warning."""
    pred_files = _images_by_stem(pred_dir, "prediction")
    gt_files = _images_by_stem(gt_dir, "ground-truth")
    if not gt_files:
        raise FileNotFoundError(f"no mask images ({', '.join(IMAGE_SUFFIXES)}) found in {gt_dir}")
    if names is not None:
        absent = [name for name in dict.fromkeys(names) if name not in gt_files]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} listed name(s) have no mask in {gt_dir}: {_name_list(absent)}"
            )
        gt_files = {name: gt_files[name] for name in dict.fromkeys(names)}
        pred_files = {name: path for name, path in pred_files.items() if name in gt_files}
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} mask(s) in {gt_dir} have no prediction in {pred_dir}: "
            f"{_name_list(missing)}"
        )
    unmatched = sorted(set(pred_files) - set(gt_files))
    if unmatched:
        warnings.warn(
            f"{len(unmatched)} prediction(s) in {pred_dir} have no mask in {gt_dir} and are "
            f"skipped: {_name_list(unmatched)}",
            stacklevel=3,  # the caller of evaluate_folders
        )
    return pred_files, gt_files


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except OSError as error:
        raise FolderError(f"{path}: cannot read image ({error})") from error
    return image


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _evaluate_binary(pairs: list[tuple[Path, Path]], workers: int) -> dict[str, Any]:
    """Score ``(prediction, mask)`` pairs in shards and merge the shards' records in file order."""
    metrics = SODMetrics()
    resized = 0
    for state, shard_resized in _map_in_order(_score_binary_shard, _shards(pairs, workers), workers):
        metrics.merge_state(state)
        resized += shard_resized
    return {"task": "binary", "num_images": len(pairs), "resized": resized,
            "metrics": metrics.get_results()}


def _shards(items: list[Any], workers: int) -> list[list[Any]]:
    """Consecutive runs of ``items``: one for one worker, else several per worker."""
    count = 1 if workers == 1 else min(len(items), workers * _SHARDS_PER_WORKER)
    bounds = [round(i * len(items) / count) for i in range(count + 1)]
    return [items[start:stop] for start, stop in zip(bounds, bounds[1:])]


def _map_in_order(function: Any, shards: list[Any], workers: int) -> Iterator[Any]:
    """``function`` over ``shards``, results in shard order: in this process, or in a pool."""
    workers = min(workers, len(shards))
    if workers <= 1:
        yield from map(function, shards)
        return
    # Forked workers share the modules already imported here (pysodmetrics takes about a second
    # to import); spawned ones would import them again, each.
    context = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        yield from pool.map(function, shards)
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, do not score the remaining shards


def _score_binary_shard(pairs: list[tuple[Path, Path]]) -> tuple[dict[str, list[Any]], int]:
    """The per-image records (:meth:`SODMetrics.state`) of one shard and how many maps it resized."""
    if multiprocessing.parent_process() is not None and "torch" in sys.modules:
        # A forked child must keep out of the OpenMP pool its parent started (GNU OpenMP is not
        # fork-safe); one thread per worker is what the pool wants anyway.
        sys.modules["torch"].set_num_threads(1)
    metrics = SODMetrics()
    resized = 0
    for pred_path, gt_path in pairs:
        pred = _prediction_map(_open(pred_path), pred_path)
        try:
            gt = binarize_mask(read_grey(gt_path)).astype(bool)
        except DataError as error:
            raise FolderError(str(error)) from error
        resized += pred.shape != gt.shape
        try:
            metrics.step(pred, gt)
        except (ValueError, TypeError) as error:
            raise FolderError(f"{gt_path} / {pred_path}: {error}") from error
    return metrics.state(), resized


def _prediction_map(image: Image.Image, path: Path) -> np.ndarray:
    """H×W map on one scale whatever the file's bit depth: uint8 0-255, or float in [0, 1].

    16-bit maps are scaled from 0-65535 (and quantised to 0-255, as scoring does anyway), so a
    map scores the same saved as 8- or 16-bit; float maps must hold probabilities in [0, 1].
    """
    if image.mode.startswith("I;16"):
        return np.rint(np.asarray(image, dtype=np.float64) * (255 / 65535)).astype(np.uint8)
    if image.mode == "F":
        values = np.asarray(image)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (0.0 <= low and high <= 1.0):
            raise FolderError(f"{path}: floating-point prediction holds values in [{low:g}, {high:g}]; "
                              "expected probabilities in [0, 1]")
        return values
    if image.mode == "I":
        raise FolderError(f"{path}: 32-bit integer prediction (mode I) has no known value range; "
                          "save it as an 8- or 16-bit grey PNG, or a float map in [0, 1]")
    return np.asarray(image.convert("L"))


def _evaluate_semantic(
    names: list[str],
    pred_files: dict[str, Path],
    gt_files: dict[str, Path],
    num_classes: int,
    ignore_index: int,
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    import torch

    from segkd.metrics.semantic import SegmentationMetric

    metric = SegmentationMetric(num_classes, ignore_index=ignore_index, class_names=class_names)
    for name in names:
        gt_image = _open(gt_files[name])
        gt = _label_ids(gt_image, gt_files[name])
        pred_image = _open(pred_files[name])
        if pred_image.size != gt_image.size:
            # resizing a label map would invent labels along every edge: refuse it
            raise FolderError(
                f"{pred_files[name]}: prediction is {pred_image.height}×{pred_image.width} but its "
                f"mask {gt_files[name]} is {gt_image.height}×{gt_image.width} (H×W); semantic label "
                "maps must be saved at the mask's size"
            )
        pred = _label_ids(pred_image, pred_files[name])
        try:
            metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        except ValueError as error:
            raise FolderError(f"{gt_files[name]} / {pred_files[name]}: {error}") from error
    return {"task": "semantic", "num_images": len(names), "resized": 0, "metrics": metric.compute()}


def _label_ids(image: Image.Image, path: Path) -> np.ndarray:
    """H×W int64 class ids of a palette or single-channel label map."""
    if image.mode not in INDEX_MODES:
        raise FolderError(
            f"{path}: label map has mode {image.mode!r}; expected a palette (P) or single-channel"
            " (L, I) image whose pixel values are class ids"
        )
    return np.asarray(image).astype(np.int64)


def _images_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder {folder} does not exist")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in by_stem:
            raise FolderError(
                f"{role} name '{path.stem}' is ambiguous: {by_stem[path.stem].name} and {path.name}"
            )
        by_stem[path.stem] = path
    return by_stem


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def format_table(metrics: dict[str, Any], precision: int = 4) -> str:
    """Render a metrics dict as aligned plain text.

    Scalars become ``name  value`` rows; a nested ``{row: {column: value}}`` entry (such as the
    semantic ``per_class``) becomes a table with one column per inner key.

    Example:
        >>> print(format_table({"mIoU": 0.5, "per_class": {"cat": {"IoU": 0.5, "Acc": 1.0}}}))
        mIoU  0.5000
        <BLANKLINE>
        per_class  IoU     Acc
        cat        0.5000  1.0000
    """
    def cell(value: Any) -> str:
        if isinstance(value, float) and math.isnan(value):
            return "n/a"
        if isinstance(value, (float, np.floating)):
            return f"{value:.{precision}f}"
        return str(value)

    scalars = {key: value for key, value in metrics.items() if not isinstance(value, dict)}
    sections: list[str] = []
    if scalars:
        width = max(len(key) for key in scalars)
        sections.append("\n".join(f"{key:<{width}}  {cell(v)}" for key, v in scalars.items()))
    for table_name, rows in metrics.items():
        if not isinstance(rows, dict):
            continue
        columns = list(dict.fromkeys(column for row in rows.values() for column in row))
        grid = [[table_name, *columns]] + [
            [str(row_name), *(cell(row.get(column, "")) for column in columns)]
            for row_name, row in rows.items()
        ]
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        sections.append(
            "\n".join(
                "  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() for line in grid
            )
        )
    return "\n\n".join(sections)
