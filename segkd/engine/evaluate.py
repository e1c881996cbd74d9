"""Score a model on a data set: every image once, sharded over DDP ranks, metrics merged exactly."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from segkd.config import Config
from segkd.data.classes import layout_palette
from segkd.engine.distributed import DistEnv, all_reduce_sum, epoch_indices, gather_objects
from segkd.engine.inference import predict_binary, predict_semantic, to_uint8
from segkd.metrics import SegmentationMetric, SODMetrics


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """A real autocast context, or a null one when AMP is off (nanoGPT's pattern)."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    task: str,
    device: torch.device,
    env: DistEnv | None = None,
    amp: str = "none",
    num_classes: int = 1,
    class_names: list[str] | None = None,
    ignore_index: int = 255,
    crop_size: int = 473,
    base_size: int = 512,
    scales: list[float] | tuple[float, ...] = (1.0,),
    flip: bool = False,
    sliding: bool = True,
    stride_rate: float = 2 / 3,
    save_dir: Path | None = None,
    palette: list[int] | None = None,
    progress: bool = False,
    return_curves: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (samples: ``image`` 3×h×w, full-resolution ``mask``).

    Semantic: ``mIoU``, ``mAcc``, ``allAcc`` and ``per_class``. Binary: the SOD metrics. With
    ``save_dir`` the prediction maps are written as PNG (grey for binary, palette for semantic).
    """
    env = env or DistEnv()
    was_training = model.training
    model.eval()
    indices = epoch_indices(len(dataset), env, seed=0, epoch=0, shuffle=False)
    if task == "semantic":
        metric: Any = SegmentationMetric(num_classes, ignore_index=ignore_index, class_names=class_names, device=device)
    else:
        metric = SODMetrics()
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    protocol = {"crop_size": crop_size, "base_size": base_size, "scales": scales, "flip": flip,
                "sliding": sliding, "stride_rate": stride_rate}
    for index in tqdm(indices, desc="eval", disable=not (progress and env.is_main), leave=False):
        sample = dataset[index]
        with autocast_context(device, amp):
            grey = _predict_and_score(model, sample, metric, task, device, protocol)
        if save_dir is not None:
            _save_map(grey, save_dir / f"{sample['name']}.png", palette if task == "semantic" else None)
    model.train(was_training)
    return _merged_results(metric, task, env, return_curves)


def _predict_and_score(model: nn.Module, sample: dict[str, Any], metric: Any, task: str, device: torch.device,
                       protocol: dict[str, Any]) -> np.ndarray:
    """Predict one sample, add it to ``metric``, and return its H×W uint8 map (class ids, or the
    foreground probability ×255)."""
    image = sample["image"].unsqueeze(0).to(device)
    mask = sample["mask"]
    if task == "semantic":
        pred = predict_semantic(model, image, **protocol).argmax(dim=1)
        metric.update(pred, mask.unsqueeze(0).to(device))
        return pred[0].to(torch.uint8).cpu().numpy()
    gt = mask[0] if mask.dim() == 3 else mask
    grey = to_uint8(predict_binary(model, image, tuple(gt.shape[-2:]))[0, 0])
    metric.step(grey, (gt.numpy() > 0.5).astype(np.uint8) * 255)
    return grey


def _save_map(grey: np.ndarray, path: Path, palette: list[int] | None) -> None:
    """A grey PNG, or a palette PNG of class ids when ``palette`` is given."""
    out = Image.fromarray(grey)
    if palette is not None:
        out = out.convert("P")
        out.putpalette(palette)
    out.save(path)


def _merged_results(metric: Any, task: str, env: DistEnv, return_curves: bool) -> dict[str, Any]:
    """The metrics over every rank's images: summed confusion matrices, or merged SOD records."""
    if task == "semantic":
        all_reduce_sum(metric.confusion, env)
        return metric.compute()
    states = gather_objects(metric.state(), env)
    merged = SODMetrics()
    for state in states:
        merged.merge_state(state)
    results: dict[str, Any] = dict(merged.get_results())
    if return_curves:
        results["curves"] = merged.curves()
    return results


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def evaluate_with_config(model: nn.Module, dataset: Dataset, cfg: Config, device: torch.device,
                         env: DistEnv | None = None, **kwargs: Any) -> dict[str, Any]:
    """``evaluate`` with the protocol the config describes; saved semantic maps (``save_dir``) take
    the data set's palette unless ``palette`` is given."""
    d, e = cfg.data, cfg.eval
    kwargs.setdefault("palette", layout_palette(d.layout))
    return evaluate(
        unwrap(model), dataset, task=cfg.task, device=device, env=env or DistEnv(), amp=cfg.train.amp,
        num_classes=d.num_classes, class_names=d.class_names, ignore_index=d.ignore_index,
        crop_size=d.crop_size, base_size=d.base_size, scales=e.scales, flip=e.flip,
        sliding=e.sliding, stride_rate=e.stride_rate, **kwargs,
    )
