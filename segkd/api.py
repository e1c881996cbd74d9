"""The config-free functions of the public API: builders, evaluation, loading and export.

``segkd`` exports them (with ``segkd.Distiller`` and ``segkd.build_model``); they take keyword
arguments, not a config, and accept models as users have them (see ``segkd.models.outputs``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segkd.config import Config
from segkd.data import DataConfig
from segkd.data import build_dataset as _build_dataset
from segkd.distill import DistillMethod
from segkd.distill import build_method as _build_method
from segkd.engine.evaluate import evaluate as _evaluate
from segkd.engine.run import load_trained as _load_trained
from segkd.models.outputs import SegmentationOutputs


def build_method(name: str | Mapping[str, Any], /, *, ignore_index: int = 255, **options: Any) -> DistillMethod:
    """A distillation method by name and options, told the label of unlabelled pixels.

    Example:
        >>> cwd = segkd.build_method("cwd", temperature=4.0, at="logits")
        >>> kd = segkd.build_method({"name": "logits_kd", "temperature": 2.0})
    """
    spec = {"name": name, **options} if isinstance(name, str) else {**name, **options}
    try:
        method = _build_method(spec)
    except KeyError as err:  # the registry's message, without KeyError's quotes
        raise ValueError(err.args[0]) from None
    method.ignore_index = ignore_index
    return method


def build_dataset(task: str, split: str = "train", *, augment: bool | None = None,
                  **data_options: Any) -> Dataset:
    """A data set from ``data:`` options as keyword arguments (``segkd train``'s YAML keys).

    Samples are dicts: ``"image"`` 3×H×W normalised; ``"mask"`` (semantic: H×W class indices,
    255 = unlabelled; binary: 1×H×W in {0, 1}); ``"name"``. Training samples are augmented and
    cropped to one size, evaluation samples keep their full-resolution mask.

    Example:
        >>> train = segkd.build_dataset("semantic", "train", layout="synthetic", root="data/syn",
        ...                             crop_size=64, synthetic={"num_train": 32, "image_size": 64})
    """
    if task not in ("semantic", "binary"):
        raise ValueError(f"task must be 'semantic' or 'binary', got {task!r}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    try:
        cfg = DataConfig(**data_options)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"build_dataset: {problems}") from None
    return _build_dataset(cfg, task, split, augment=augment)  # type: ignore[arg-type]


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def evaluate(model: nn.Module, data: Dataset | DataLoader, *, task: str | None = None,
             num_classes: int | None = None, ignore_index: int = 255, class_names: list[str] | None = None,
             device: torch.device | str | None = None, base_size: int | None = None, crop_size: int | None = None,
             sliding: bool = False, scales: tuple[float, ...] = (1.0,), flip: bool = False,
             amp: str = "none") -> dict[str, Any]:
    """``segkd eval``'s metrics of ``model`` on every sample of ``data`` (a data set, or a loader's).

    Semantic: ``mIoU``, ``mAcc``, ``allAcc``, ``per_class``; binary: MAE, F-, S- and E-measures.

    Args:
        model: any segmentation network; its output may be a tensor, tuple, dict or ``.logits``.
        data: samples ``{"image": 3×H×W, "mask": full-resolution mask}`` (``build_dataset(...,
            "val")`` gives these). A DataLoader is read through its ``dataset``, one image at a time.
        task: ``"semantic"`` or ``"binary"``; default: binary when the masks are float.
        num_classes: default: the model's output channels.
        base_size / crop_size: semantic test protocol (long side resized to ``scale·base_size``;
            sliding windows of ``crop_size``); default: the first image's long side, whole image.

    Example:
        >>> segkd.evaluate(student, segkd.build_dataset("semantic", "val", layout="synthetic"))["mIoU"]
    """
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("evaluate: the data set is empty")
    first = dataset[0]
    if not isinstance(first, Mapping) or "image" not in first or "mask" not in first:
        raise ValueError("evaluate: samples must be dicts with 'image' (3×H×W) and 'mask', as build_dataset gives")
    task = task or ("binary" if first["mask"].is_floating_point() else "semantic")
    if task not in ("semantic", "binary"):
        raise ValueError(f"task must be 'semantic' or 'binary', got {task!r}")
    device = torch.device(device) if device is not None else _device_of(model)
    wrapped = SegmentationOutputs(model).to(device)
    was_training = model.training
    if num_classes is None:
        with torch.inference_mode():
            num_classes = wrapped.eval()(first["image"][None].to(device))["out"].shape[1]
    wrapped.train(was_training)  # evaluate() puts back the mode it finds
    side = base_size or max(first["image"].shape[-2:])
    return _evaluate(wrapped, dataset, task=task, device=device, amp=amp, num_classes=num_classes,
                     class_names=class_names, ignore_index=ignore_index, crop_size=crop_size or side,
                     base_size=side, scales=scales, flip=flip, sliding=sliding)


def load_trained(path: str | Path, *, device: torch.device | str | None = None,
                 trust: bool | None = None) -> tuple[nn.Module, Config]:
    """The trained model of a segkd checkpoint (``last.pt`` / ``best.pt``), in eval mode, and its config.

    ``device``: default the config's ``train.device`` (``auto``: CUDA when available). A stored
    config that builds its model by importing code runs only with ``trust=True``.

    Example:
        >>> teacher, cfg = segkd.load_trained("runs/tiny_semantic_teacher/last.pt", device="cpu")
    """
    cfg, model, picked = _load_trained(path, trust=trust)
    return model.to(torch.device(device) if device is not None else picked), cfg


def export_onnx(model: nn.Module, path: str | Path, *, input_size: tuple[int, int], **options: Any) -> dict[str, Any]:
    """Write ``model``'s inference graph to ``path`` as ONNX (input ``image``, output ``out`` logits),
    checked against PyTorch with onnxruntime. Options: ``opset``, ``dynamic``, ``check``,
    ``tolerance``, ``metadata`` (see ``segkd export``).

    Example:
        >>> segkd.export_onnx(student, "student.onnx", input_size=(512, 512))
    """
    from segkd.commands.export import export_onnx as _export_onnx  # onnx is imported only when exporting

    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx needs an nn.Module, got {type(model).__name__}")
    return _export_onnx(SegmentationOutputs(model), path, input_size=input_size, **options)

