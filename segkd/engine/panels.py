"""TensorBoard panels: ground truth beside prediction for a few validation images."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from segkd.config import Config
from segkd.data.classes import layout_palette
from segkd.engine.colorize import colorize_labels
from segkd.engine.inference import predict_binary, predict_semantic


@torch.inference_mode()
def log_prediction_images(writer: Any, model: nn.Module, dataset: Dataset, cfg: Config,
                          device: torch.device, step: int, count: int = 4) -> None:
    """Ground truth beside prediction for the first ``count`` validation images, in TensorBoard
    (binary: 1×H×2W grey; semantic: H×2W×3 in the data set's colours)."""
    was_training = model.training
    model.eval()
    palette = layout_palette(cfg.data.layout)
    for index in range(min(count, len(dataset))):  # type: ignore[arg-type]
        sample = dataset[index]
        image = sample["image"].unsqueeze(0).to(device)
        mask = sample["mask"]
        if cfg.task == "binary":
            prob = predict_binary(model, image, tuple(mask.shape[-2:]))[0].cpu()
            panel = torch.cat([mask.float().reshape(prob.shape), prob], dim=-1)  # 1×H×2W
            writer.add_image(f"predictions/{sample['name']}", panel, step)
        else:
            d = cfg.data
            probs = predict_semantic(model, image, crop_size=d.crop_size, base_size=d.base_size, sliding=False)
            pred = probs.argmax(1)[0].cpu().numpy()
            colored = np.concatenate([colorize_labels(mask.numpy(), d.num_classes, palette),
                                      colorize_labels(pred, d.num_classes, palette)], axis=1)
            writer.add_image(f"predictions/{sample['name']}", colored, step, dataformats="HWC")
    model.train(was_training)
