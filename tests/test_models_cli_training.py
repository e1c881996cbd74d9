"""torchvision's deeplabv3_resnet50 and a module defined here train through the CLI, as student and teacher."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.cli import main
from segkd.config import save_config, validate


class PlainNet(nn.Module):
    """A user's network, unknown to segkd: one conv at stride 2, logits at half size."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.cls = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(torch.relu(self.body(x)))


PLAIN = {"name": "import", "target": f"{__name__}:PlainNet", "kwargs": {"num_classes": 3}}
TORCHVISION = {"name": "deeplabv3_resnet50", "aux": True}


def _train(tmp_path: Path, name: str, model: dict[str, Any], distill: dict[str, Any] | None = None) -> Path:
    raw: dict[str, Any] = {
        "task": "semantic", "name": name, "output_dir": str(tmp_path / name), "model": model,
        "data": {
            "layout": "synthetic", "root": str(tmp_path / "syn"),
            "synthetic": {"num_train": 4, "num_val": 1, "image_size": 32, "num_classes": 3, "seed": 0},
            "crop_size": 32, "base_size": 32, "batch_size": 2, "num_workers": 0,
        },
        "train": {"epochs": 1, "max_iters": 2, "seed": 3, "progress": False, "log_every": 1},
        "eval": {"sliding": False},
    }
    if distill is not None:
        raw["distill"] = distill
    cfg = validate(raw)
    save_config(cfg, tmp_path / f"{name}.yaml")
    assert main(["train", str(tmp_path / f"{name}.yaml")]) == 0
    log = [json.loads(line) for line in (cfg.run_dir / "history.jsonl").read_text().splitlines()]
    steps = [entry["train"] for entry in log if "train" in entry]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(step["total"])) for step in steps)
    if distill is not None:  # the distillation term was computed and logged at each step
        assert all(step["logits_kd/kd"] > 0 for step in steps)
    assert "mIoU" in log[-1]["val"]
    return cfg.run_dir


def test_torchvision_and_imported_models_as_student_and_teacher(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv_run = _train(tmp_path, "tv_student", TORCHVISION)
    kd = [{"name": "logits_kd", "temperature": 1.0, "weight": 1.0}]
    # the user's module learns from the torchvision teacher...
    plain_run = _train(
        tmp_path, "plain_student", PLAIN,
        {"teacher": {"model": TORCHVISION, "checkpoint": str(tv_run / "last.pt")}, "methods": kd},
    )
    # ...and teaches it, from a plain state dict of its own keys (key_map puts them under net.)
    trained = torch.load(plain_run / "last.pt", map_location="cpu", weights_only=False)["model"]
    torch.save({k.removeprefix("net."): v for k, v in trained.items()}, tmp_path / "plain.pth")
    _train(
        tmp_path, "tv_from_plain", TORCHVISION,
        {"teacher": {"model": PLAIN, "checkpoint": str(tmp_path / "plain.pth"), "key_map": {"": "net."}},
         "methods": kd},
    )
