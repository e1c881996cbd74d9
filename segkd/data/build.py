"""From a ``DataConfig`` to data sets for a task and split."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, TypeVar

from torch.utils.data import Dataset

from segkd.data.binary import BinarySegDataset, list_binary_samples
from segkd.data.config import DataConfig, Split, Task
from segkd.data.layouts import LAYOUTS
from segkd.data.readers import DataError, Listing
from segkd.data.semantic import (
    ExtraMaps,
    PathPair,
    SemanticSegDataset,
    read_pair_list,
    resolve_pairs,
    voc_pairs,
)
from segkd.data.synthetic import make_synthetic
from segkd.data.transforms import build_eval_transform, build_train_transform

# Which layouts can feed which task.
TASK_LAYOUTS: dict[str, tuple[str, ...]] = {
    "binary": ("binary", "synthetic"),
    "semantic": ("semseg_list", "voc", "synthetic", *LAYOUTS),
}


def _check_task(cfg: DataConfig, task: str) -> None:
    if task not in TASK_LAYOUTS:
        raise ValueError(f"task must be 'semantic' or 'binary', got {task!r}")
    if cfg.layout not in TASK_LAYOUTS[task]:
        raise DataError(
            f"data.layout: '{cfg.layout}' does not hold {task} data; a {task} task reads "
            f"layout {' or '.join(repr(name) for name in TASK_LAYOUTS[task])}"
        )


def resolve_root(cfg: DataConfig, task: Task) -> Path:
    """The data folder. For layout synthetic the set is generated there first (once), at
    ``cfg.root`` or ``./data/synthetic-{task}``."""
    _check_task(cfg, task)
    if cfg.layout != "synthetic":
        assert cfg.root is not None  # the config validator demands it
        return cfg.root
    root = cfg.root if cfg.root is not None else Path("data") / f"synthetic-{task}"
    synthetic = cfg.synthetic
    return make_synthetic(
        root,
        task,
        num_train=synthetic.num_train,
        num_val=synthetic.num_val,
        image_size=synthetic.image_size,
        num_classes=synthetic.num_classes,
        seed=synthetic.seed,
        label_noise=synthetic.label_noise,
    )


def split_file_name(cfg: DataConfig, task: Task, split: Split) -> str:
    """The list name read for ``split``; the synthetic set always writes train / val (test)."""
    if cfg.layout == "synthetic":
        return "train" if split == "train" else ("test" if task == "binary" else "val")
    return cfg.split_name(task, split)


HOLDOUT_SPLIT = "holdout"
_HOLDOUT_NEEDS_FRACTION = "data.val_split: 'holdout' needs data.holdout > 0 (the fraction to hold out)"
Item = TypeVar("Item")


def _semantic_pairs(cfg: DataConfig, root: Path, name: str) -> list[PathPair]:
    if cfg.holdout and (name == HOLDOUT_SPLIT or name == cfg.train_split):
        pairs = _semantic_pairs(cfg.model_copy(update={"holdout": 0.0}), root, cfg.train_split)
        return _one_side(pairs, [Path(pair[0]).stem for pair in pairs], cfg, name == HOLDOUT_SPLIT)
    if name == HOLDOUT_SPLIT:
        raise DataError(_HOLDOUT_NEEDS_FRACTION)
    if cfg.layout == "voc":
        return voc_pairs(root, name, aug=cfg.voc_aug)
    if cfg.layout in LAYOUTS:
        return LAYOUTS[cfg.layout].pairs(root, name)
    return read_pair_list(root, name)


def _binary_listing(cfg: DataConfig, root: Path, name: str) -> Listing:
    """The samples of list ``name``; with ``data.holdout`` the training list is split in two by
    name, its held-out part read as split 'holdout' and the rest as the training split."""
    if cfg.holdout and (name == HOLDOUT_SPLIT or name == cfg.train_split):
        listing = list_binary_samples(root, cfg.train_split)
        names = [sample.name for sample in listing.samples]
        listing.samples = _one_side(listing.samples, names, cfg, name == HOLDOUT_SPLIT)
        return listing
    if name == HOLDOUT_SPLIT:
        raise DataError(_HOLDOUT_NEEDS_FRACTION)
    return list_binary_samples(root, name)


def _one_side(items: list[Item], names: list[str], cfg: DataConfig, held_out: bool) -> list[Item]:
    """The held-out (or the training) part of the training list's ``items``, named ``names``.

    Raises:
        DataError: the fraction leaves one of the two parts empty.
    """
    sides = [is_held_out(name, cfg.holdout) for name in names]
    if names and (all(sides) or not any(sides)):
        empty = "the training part" if all(sides) else "the held-out part"
        raise DataError(
            f"data.holdout: {cfg.holdout} of the {len(names)} samples of '{cfg.train_split}' leaves "
            f"{empty} empty; choose a fraction that holds out some samples but not all"
        )
    return [item for item, side in zip(items, sides) if side == held_out]


def is_held_out(name: str, fraction: float) -> bool:
    """Whether sample ``name`` belongs to the held-out part: a hash of the name, so the split
    does not depend on the list's order and a sample never changes side."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def list_samples(cfg: DataConfig, task: Task, split: Split) -> Listing:
    """The samples of a split, with per-sample listing problems (missing files).

    Raises:
        DataError: the layout does not suit the task, or the list file is missing, empty or
            malformed.
    """
    root = resolve_root(cfg, task)
    name = split_file_name(cfg, task, split)
    if task == "binary":
        return _binary_listing(cfg, root, name)
    return resolve_pairs(root, _semantic_pairs(cfg, root, name))


def build_dataset(cfg: DataConfig, task: Task, split: Split, *, augment: bool | None = None,
                  extra_maps: ExtraMaps | None = None) -> Dataset[dict[str, Any]]:
    """The data set of ``split`` with its transform (training or evaluation).

    Items follow the sample contract: ``{"image": 3×H×W, "mask": ..., "name": str}``; see
    ``BinarySegDataset`` and ``SemanticSegDataset``.

    Args:
        augment: use the training transform (default: for the training split only); False gives
            the evaluation transform, e.g. the training images as read, normalised, uncropped.
        extra_maps: semantic only: per-pixel maps carried through the transform with each sample
            (see ``SemanticSegDataset``).

    Example:
        >>> cfg = DataConfig(layout="synthetic", root="/tmp/syn")
        >>> build_dataset(cfg, "semantic", "train")[0]["image"].shape
        torch.Size([3, 473, 473])
    """
    root = resolve_root(cfg, task)
    name = split_file_name(cfg, task, split)
    augment = split == "train" if augment is None else augment
    transform = (build_train_transform if augment else build_eval_transform)(task, cfg)
    if task == "binary":
        if extra_maps is not None:
            raise DataError("extra per-pixel maps (a teacher cache) are carried by semantic data sets only")
        return BinarySegDataset(root, name, transform, listing=_binary_listing(cfg, root, name))
    return SemanticSegDataset(
        root,
        pairs=_semantic_pairs(cfg, root, name),
        num_classes=cfg.num_classes,
        ignore_index=cfg.ignore_index,
        transform=transform,
        long_side=cfg.long_side,
        label_map=LAYOUTS[cfg.layout].label_map if cfg.layout in LAYOUTS else None,
        extra_maps=extra_maps,
    )
