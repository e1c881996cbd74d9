"""Tiny run configs and networks shared by the tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.config import Config, deep_merge, validate
from segkd.models.fusion import fusion


def fusion_net(backbone: str = "resnet18") -> nn.Module:
    """The binary fusion network with a narrow decoder (width 8), its weights drawn after seeding 0."""
    torch.manual_seed(0)
    return fusion(backbone=backbone, width=8)


def tiny_binary_config(tmp: Path, **overrides: Any) -> Config:
    raw: dict[str, Any] = {
        "task": "binary",
        "name": "test_binary",
        "output_dir": str(tmp / "run"),
        "data": {
            "layout": "synthetic",
            "root": str(tmp / "syn-binary"),
            "synthetic": {"num_train": 8, "num_val": 5, "image_size": 32, "seed": 0},
            "train_size": 32, "multiscale_sizes": [], "test_size": 32,
            "batch_size": 4, "num_workers": 0,
        },
        "model": {"name": "fusion", "backbone": "resnet18", "width": 8},
        "optim": {"lr": 0.01, "backbone_lr_mult": 0.1, "head_lr_mult": 1.0},
        "schedule": {"name": "poly"},
        "train": {"epochs": 2, "seed": 3, "deterministic": True, "progress": False, "log_every": 1},
    }
    return validate(deep_merge(raw, overrides))


def tiny_semantic_config(tmp: Path, **overrides: Any) -> Config:
    raw: dict[str, Any] = {
        "task": "semantic",
        "name": "test_semantic",
        "output_dir": str(tmp / "run"),
        "data": {
            "layout": "synthetic",
            "root": str(tmp / "syn-semantic"),
            "synthetic": {"num_train": 8, "num_val": 3, "image_size": 32, "num_classes": 3, "seed": 0},
            "crop_size": 32, "base_size": 32, "scale_range": [0.9, 1.1],
            "batch_size": 4, "num_workers": 0,
        },
        "model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
        "train": {"epochs": 1, "seed": 3, "progress": False, "log_every": 1},
        "eval": {"sliding": False},
    }
    return validate(deep_merge(raw, overrides))
