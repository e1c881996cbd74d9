"""Offline distillation: the frozen teacher's logits, computed once per training image and reused.

``distill.teacher.cache: FOLDER`` makes the trainer read the teacher's maps from ``FOLDER`` instead
of running the teacher every step. The folder is filled by the first run that uses it, or ahead
of training by ``segkd cache-teacher CONFIG`` (under DDP, filling ahead keeps the other
processes from waiting at a barrier while the main one fills):

    FOLDER/maps/000123.logits.npy   fp16 C×h×w per training image and cached map
    FOLDER/manifest.json            what was cached and from what; written last

Geometry: the teacher runs once on each training image as the data pipeline reads it before any
augmentation: resized to ``data.long_side`` when that is set, normalised, uncropped. Its maps are
kept at their native size (``logits``: the classifier's output, e.g. 1/8 of the image; ``out``:
the image's size). For each training sample the map is resized to the image's grid the way the
teacher's own output is (bilinear, its ``align_corners``), then goes through the sample's
geometric augmentation with the image (scale, rotation, flip, pad, crop; see ``SoftMap``), and in
the step it is resized to the size the teacher's tap has on a training crop. Pixels the crop pads
or the rotation brings in hold the ignore label, so losses that skip ignore pixels skip them.
The teacher thus sees the whole image at the size it is read, not the augmented crop: a cached map
is its prediction with the whole image's context, resampled, which differs from what it would
predict on the crop itself most where the random scale is far from 1 and near the crop's borders.
``distill.teacher.cache_scales`` / ``cache_flip`` make the cached map the mean of the teacher's
logits over the image read at several scales and mirrored (multi-scale testing, once per image),
which narrows that difference and gives a teacher stronger than one forward pass.

Only class maps are cached: the teacher's ``logits`` feature point and its ``out`` output.
Every file is written atomically and ``manifest.json`` last, so an interrupted fill is never
read as complete: it is filled again. The manifest keys the cache by the teacher (checkpoint
weights, model, key map), the training list (sample names, in order) and the preprocessing
(normalisation, long side) and the views; a cache made for other ones is refused, naming what differs.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from segkd.config import Config, ConfigError
from segkd.data import build_dataset
from segkd.data.build import resolve_root
from segkd.distill import FeatureTaps
from segkd.distill.hooks import resolve_path
from segkd.engine import builders
from segkd.engine.builders import probe
from segkd.engine.checkpoint import read_checkpoint
from segkd.engine.distributed import DistEnv, barrier, pick_device
from segkd.io import atomic_output

CACHE_FORMAT = "segkd-teacher-cache-v2"  # v2: the teacher is keyed by its weights, not its file
MANIFEST = "manifest.json"
CACHEABLE = ("logits", "out")  # the class maps: the classifier's output and the model's output
KEY_PREFIX = "teacher/"  # batch key of a cached map: "teacher/logits", "teacher/out"
# Parts of the key a cache must match, with the words an error uses for each.
KEY_PARTS = {
    "teacher_checkpoint": "another teacher checkpoint",
    "teacher_model": "another teacher model",
    "key_map": "another distill.teacher.key_map",
    "training_list": "another training list",
    "normalization": "another normalisation (data.mean / data.std)",
    "long_side": "another data.long_side",
    "views": "other views (distill.teacher.cache_scales / cache_flip)",
    "task": "another task",
}


class TeacherCacheError(ConfigError):
    """A teacher cache that cannot serve this run; the message says what differs and what to do."""


def needed_maps(methods: nn.ModuleList, teacher: nn.Module, teacher_taps: Mapping[str, str]) -> dict[str, str]:
    """``{tap or output name: cached map}`` the methods read from the teacher.

    A method with no teacher taps reads the teacher's output ``out``. A tap anywhere but the
    teacher's logits cannot be served from a cache: the error names it.
    """
    logits_path = resolve_path(teacher, "logits")
    needed: dict[str, str] = {}
    for name, spec in teacher_taps.items():
        if spec != "logits" and resolve_path(teacher, spec) != logits_path:
            owner = next((m.name for m in methods if name in m.teacher_taps), "a method")
            raise TeacherCacheError(
                f"distill.teacher.cache: method '{owner}' taps the teacher at '{spec}' (tap '{name}'), which a "
                f"teacher cache does not hold (it holds {' and '.join(CACHEABLE)}); remove distill.teacher.cache "
                "to run the teacher live"
            )
        needed[name] = "logits"
    if any(m.needs_teacher and not m.teacher_taps for m in methods):
        needed["out"] = "out"
    return needed


def cache_key(cfg: Config, names: list[str]) -> dict[str, Any]:
    """What a cache must have been made from to serve ``cfg`` (see ``KEY_PARTS``)."""
    teacher_cfg = cfg.distill.teacher
    assert teacher_cfg is not None
    mean, std = cfg.data.normalization(cfg.task)
    return {
        "teacher_checkpoint": weights_sha256(Path(teacher_cfg.checkpoint)),
        "teacher_model": teacher_cfg.model.model_dump(mode="json"),
        "key_map": dict(teacher_cfg.key_map),
        "training_list": {"count": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()},
        "normalization": {"mean": list(mean), "std": list(std)},
        "long_side": cfg.data.long_side,
        "views": {"scales": list(teacher_cfg.cache_scales), "flip": teacher_cfg.cache_flip},
        "task": cfg.task,
    }


def weights_sha256(path: Path) -> str:
    """A hash of the model weights a checkpoint holds (names, dtypes, shapes, bytes): the same for the
    file kept as weights only once its run finished (``keep_weights_only``), unlike the file's bytes."""
    digest = hashlib.sha256()
    state = read_checkpoint(path)["model"]
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a completely filled cache, or None (no cache, or an interrupted fill).

    The manifest is written atomically and last, so one that cannot be read was damaged after the
    fill: it is refused rather than filled over, since the folder may serve other runs.
    """
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(path, folder, f"unreadable ({err})") from None
    if not isinstance(manifest, dict):
        raise _damaged(path, folder, "not a teacher-cache manifest")
    if manifest.get("format") != CACHE_FORMAT:
        return None
    missing = sorted({"maps", "align_corners", *KEY_PARTS} - set(manifest))
    if missing or not isinstance(manifest["maps"], list):
        raise _damaged(path, folder, f"incomplete (it lacks {missing or ['a list of maps']})")
    return manifest


def _damaged(path: Path, folder: Path, what: str) -> TeacherCacheError:
    return TeacherCacheError(f"distill.teacher.cache: {path} is {what}; delete the folder {folder} to fill "
                             "the cache again, or give another cache folder")


def check_manifest(manifest: dict[str, Any], key: dict[str, Any], maps: set[str], folder: Path) -> None:
    """Refuse a cache made from something else, or lacking a map this run needs."""
    differs = [words for part, words in KEY_PARTS.items() if manifest.get(part) != key[part]]
    if differs:
        raise TeacherCacheError(
            f"distill.teacher.cache: {folder} was filled for {', '.join(differs)}; delete the folder to "
            "fill it again for this run, or give another cache folder"
        )
    missing = sorted(maps - set(manifest["maps"]))
    if missing:
        raise TeacherCacheError(
            f"distill.teacher.cache: {folder} holds the teacher's {manifest['maps']} but this run's methods read "
            f"{missing}; give another cache folder (or delete this one to fill it with what they read)"
        )


@torch.inference_mode()
def fill(folder: Path, cfg: Config, teacher: nn.Module, maps: set[str], key: dict[str, Any],
         device: torch.device, kept: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``teacher`` on every training image (un-augmented, at each of ``key['views']``) and write
    its ``maps``; ``kept``: maps already in the folder, for the same key, that the manifest keeps."""
    dataset = build_dataset(cfg.data, cfg.task, "train", augment=False)
    (folder / MANIFEST).unlink(missing_ok=True)  # from here on the folder is incomplete
    taps = {"logits": "logits"} if "logits" in maps else {}
    views, shown = key["views"], cfg.train.progress
    align_corners = bool(getattr(teacher, "align_corners", False))
    with FeatureTaps(teacher, taps) as hooks:
        for index in tqdm(range(len(dataset)), desc=f"teacher cache {folder}", disable=not shown):
            image = dataset[index]["image"][None].to(device)
            outputs = teacher_views(teacher, hooks, image, maps, views["scales"], views["flip"], align_corners)
            for name in maps:
                with atomic_output(map_path(folder, index, name)) as tmp, open(tmp, "wb") as f:
                    np.save(f, outputs[name][0].float().cpu().numpy().astype(np.float16))
    manifest = {"format": CACHE_FORMAT, **key, "maps": sorted(set(maps) | set(kept)),
                "align_corners": bool(getattr(teacher, "align_corners", False))}
    with atomic_output(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return manifest


def teacher_views(teacher: nn.Module, hooks: FeatureTaps, image: torch.Tensor, maps: set[str],
                  scales: list[float], flip: bool, align_corners: bool) -> dict[str, torch.Tensor]:
    """The teacher's ``maps`` on ``image``, their logits averaged over the image read at each scale
    (and mirrored, with ``flip``): multi-scale testing, so the cache holds a stronger teacher than one
    forward pass. ``out`` is kept at the image's size, ``logits`` at its size at the largest scale."""
    if scales == [1.0] and not flip:
        return {**teacher(image), **hooks.pop()}
    height, width = image.shape[-2:]
    views = [(s, mirrored) for s in scales for mirrored in ((False, True) if flip else (False,))]
    sums: dict[str, torch.Tensor] = {}
    for scale, mirrored in sorted(views, reverse=True):  # the largest scale first sets the logits' size
        view = F.interpolate(image, size=(round(height * scale), round(width * scale)), mode="bilinear",
                             align_corners=align_corners) if scale != 1.0 else image
        view = view.flip(-1) if mirrored else view
        outputs = {**teacher(view), **hooks.pop()}
        for name in maps:
            value = outputs[name].flip(-1) if mirrored else outputs[name]
            size = sums[name].shape[-2:] if name in sums else ((height, width) if name == "out" else value.shape[-2:])
            if tuple(value.shape[-2:]) != tuple(size):
                value = F.interpolate(value, size=tuple(size), mode="bilinear", align_corners=align_corners)
            sums[name] = sums[name] + value if name in sums else value
    return {name: total / len(views) for name, total in sums.items()}


def map_path(folder: Path, index: int, name: str) -> Path:
    return folder / "maps" / f"{index:06d}.{name}.npy"


def open_cache(cfg: Config, teacher: nn.Module, maps: set[str], env: DistEnv, device: torch.device,
               names: list[str]) -> dict[str, Any]:
    """The manifest of the cache at ``distill.teacher.cache``, filled first when it is not complete.

    The main process fills; every process then checks the manifest against this run.
    """
    assert cfg.distill.teacher is not None and cfg.distill.teacher.cache is not None
    folder = Path(cfg.distill.teacher.cache)
    key = cache_key(cfg, names)
    if env.is_main:
        manifest = read_manifest(folder)
        if manifest is None:
            print(f"{cfg.name}: filling the teacher cache {folder} ({len(names)} training images)")
            fill(folder, cfg, teacher, maps, key, device)
        elif (missing := maps - set(manifest["maps"])) and all(manifest.get(part) == key[part] for part in KEY_PARTS):
            # the same teacher, list and views: add the maps this run reads beside those held
            print(f"{cfg.name}: adding the teacher's {sorted(missing)} to the teacher cache {folder}")
            fill(folder, cfg, teacher, missing, key, device, kept=tuple(manifest["maps"]))
    barrier(env)
    manifest = read_manifest(folder)
    if manifest is None:
        raise TeacherCacheError(f"distill.teacher.cache: {folder} holds no complete cache after filling it")
    check_manifest(manifest, key, maps, folder)
    check_map_files(folder, maps, len(names), cfg.data.num_classes)
    return manifest


def check_map_files(folder: Path, maps: set[str], count: int, channels: int) -> None:
    """Read the header of every map file: a missing, empty, cut or damaged file, or a map of another
    class count, is refused here, before training, rather than by a data-loading worker mid-epoch
    (whose error arrives wrapped in its own traceback). Only headers are read: a cache of 10,000
    images is checked in seconds."""
    again = f"delete {folder / MANIFEST} to fill the cache again"
    for index in range(count):
        for name in sorted(maps):
            path = map_path(folder, index, name)
            try:
                with path.open("rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    data_start = f.tell()
            except (OSError, ValueError, EOFError) as err:
                raise TeacherCacheError(f"distill.teacher.cache: {path} is unreadable "
                                        f"({err or type(err).__name__}); {again}") from None
            if len(shape) != 3 or shape[0] != channels:
                raise TeacherCacheError(f"distill.teacher.cache: {path} holds a map of shape {tuple(shape)}, not "
                                        f"{channels}×H×W (one channel per class of this run); {again}")
            if path.stat().st_size < data_start + int(np.prod(shape)) * dtype.itemsize:
                raise TeacherCacheError(f"distill.teacher.cache: {path} is cut short; {again}")


class CacheReader:
    """The cached maps of one training sample at its image's size (``SemanticSegDataset.extra_maps``).

    ``channels``: the class count every map must have (None: not checked).
    """

    def __init__(self, folder: Path, maps: list[str], align_corners: bool, channels: int | None = None) -> None:
        self.folder, self.maps, self.align_corners, self.channels = folder, maps, align_corners, channels

    def __call__(self, index: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.maps:
            path = map_path(self.folder, index, name)
            again = f"delete {self.folder / MANIFEST} to fill the cache again"
            try:
                stored = torch.from_numpy(np.load(path)).float()
            except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
                raise TeacherCacheError(f"distill.teacher.cache: {path} is unreadable "
                                        f"({err or type(err).__name__}); {again}") from None
            if stored.ndim != 3 or (self.channels is not None and stored.shape[0] != self.channels):
                raise TeacherCacheError(
                    f"distill.teacher.cache: {path} holds a map of shape {tuple(stored.shape)}, not "
                    f"{self.channels or 'C'}×H×W (one channel per class of this run); {again}")
            if tuple(stored.shape[-2:]) != tuple(size):  # the teacher's grid → the image's, as the model upsamples
                stored = F.interpolate(stored[None], size=size, mode="bilinear",
                                       align_corners=self.align_corners)[0]
            out[KEY_PREFIX + name] = stored
        return out


class _CachedOutputs(dict):
    """The cached teacher tensors; reading one the cache does not hold says so."""

    def __missing__(self, key: str) -> torch.Tensor:
        raise TeacherCacheError(f"distill.teacher.cache: a method reads the teacher's '{key}', which a teacher "
                                f"cache does not hold (this run reads {sorted(self)}); remove distill.teacher.cache")


class CachedTeacher:
    """Teacher tensors read from the batch, where the data set put the cached maps.

    Each map arrives at the training crop's size, moved with the crop; ``logits`` is resized to
    the size the teacher's logits have on such a crop (found by one dry forward pass).
    """

    def __init__(self, model: nn.Module, needed: Mapping[str, str], example: torch.Tensor,
                 align_corners: bool) -> None:
        self.model = model  # for its final metrics; it does not run during training
        self.needed = dict(needed)
        self.align_corners = align_corners
        self.sizes = {}
        if "logits" in self.needed.values():
            logits = probe(model, {"logits": "logits"}, example[:1], train_mode=False, role="teacher")["logits"]
            self.sizes["logits"] = tuple(logits.shape[-2:])

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = _CachedOutputs()
        for name, stored in self.needed.items():
            value = batch[KEY_PREFIX + stored]
            size = self.sizes.get(stored)
            if size is not None and tuple(value.shape[-2:]) != size:
                value = F.interpolate(value, size=size, mode="bilinear", align_corners=self.align_corners)
            out[name] = value
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> CachedTeacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def open_cached_teacher(cfg: Config, model: nn.Module, methods: nn.ModuleList, taps: Mapping[str, str],
                        train_set: Any, example: torch.Tensor, env: DistEnv, device: torch.device) -> CachedTeacher:
    """The cached teacher of a run: the cache checked (filled first when incomplete), and the
    training set (a ``SemanticSegDataset``) made to carry the cached maps of each sample."""
    assert cfg.distill.teacher is not None and cfg.distill.teacher.cache is not None
    if cfg.task != "semantic":
        raise TeacherCacheError("distill.teacher.cache: only semantic tasks can read a teacher cache (binary "
                                "training resizes every batch to its own size); remove the key")
    needed = needed_maps(methods, model, taps)
    maps = sorted(set(needed.values()))
    manifest = open_cache(cfg, model, set(maps), env, device, [s.name for s in train_set.samples])
    train_set.extra_maps = CacheReader(Path(cfg.distill.teacher.cache), maps, manifest["align_corners"],
                                       channels=cfg.data.num_classes)
    return CachedTeacher(model, needed, example, manifest["align_corners"])


def fill_ahead(cfg: Config) -> dict[str, Any]:
    """Fill (or check) the teacher cache of ``cfg`` without training (``segkd cache-teacher``):
    the maps its methods read, from its teacher, for its training list. Returns the manifest."""
    teacher_cfg = cfg.distill.teacher
    if teacher_cfg is None or teacher_cfg.cache is None:
        raise TeacherCacheError("distill.teacher.cache: not set; give the folder to fill, e.g. "
                                "--set distill.teacher.cache=runs/teacher_cache")
    if cfg.task != "semantic":
        raise TeacherCacheError("distill.teacher.cache: only semantic tasks can read a teacher cache; remove the key")
    device = pick_device(cfg.train.device)
    resolve_root(cfg.data, cfg.task)
    train_set = build_dataset(cfg.data, cfg.task, "train", augment=False)
    student, methods = builders.build_student(cfg).to(device), builders.build_methods(cfg).to(device)
    if not builders.needs_teacher(methods):
        raise TeacherCacheError("distill.teacher.cache: no method in distill.methods reads a teacher")
    teacher = builders.build_teacher(teacher_cfg, cfg, device)
    # the probe needs only shapes: one image at the training crop size
    size = cfg.data.crop_size
    example = torch.zeros(2, 3, size, size, device=device)
    _, taps = builders.prepare_methods(methods, student, teacher, example)
    maps = set(needed_maps(methods, teacher, taps).values())
    return open_cache(cfg, teacher, maps, DistEnv(), device, [s.name for s in train_set.samples])
