"""The shipped CIRKD-protocol configs hold the protocol: Cityscapes, 40k iterations, batch 8, SGD 0.02, poly."""
from __future__ import annotations

from pathlib import Path

import pytest

from segkd.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "segkd" / "configs"
STUDENTS = {
    "cirkd_deeplabv3_r101_cityscapes": ("deeplabv3", "resnet101", []),
    "cirkd_deeplabv3_r18_cityscapes": ("deeplabv3", "resnet18", []),
    "cirkd_pspnet_r18_cityscapes": ("pspnet", "resnet18", []),
    "cirkd_kd_deeplabv3_r101_to_r18_cityscapes": ("deeplabv3", "resnet18", ["logits_kd", "cirkd"]),
    "cirkd_kd_deeplabv3_r101_to_pspnet_r18_cityscapes": ("pspnet", "resnet18", ["logits_kd", "cirkd"]),
    "cirkd_afdcd_deeplabv3_r101_to_r18_cityscapes": ("deeplabv3", "resnet18", ["logits_kd", "afdcd"]),
    "cirkd_afdcd_deeplabv3_r101_to_pspnet_r18_cityscapes": ("pspnet", "resnet18", ["logits_kd", "afdcd"]),
}


def test_every_cirkd_config_is_listed() -> None:
    assert {p.stem for p in CONFIG_DIR.glob("cirkd_*.yaml")} == set(STUDENTS)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_cirkd_protocol(name: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    model, backbone, methods = STUDENTS[name]
    assert (cfg.model.name, cfg.model.kwargs["backbone"], cfg.model.kwargs["output_stride"]) == (model, backbone, 8)
    assert cfg.model.kwargs["pretrained"] == "imagenet"
    d = cfg.data
    assert (d.layout, d.num_classes, d.crop_size, d.batch_size, d.scale_range) == ("cityscapes", 19, 512, 8, (0.5, 2.0))
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.head_lr_mult) == (0.02, 0.9, 1e-4, 1.0)
    assert (cfg.schedule.name, cfg.schedule.power, cfg.train.max_iters) == ("poly", 0.9, 40000)
    assert cfg.train.epochs * (2975 // d.batch_size) >= 40000  # the iteration cap, not the epochs, ends it
    assert [m["name"] for m in cfg.distill.methods] == methods
    if methods:
        teacher = cfg.distill.teacher
        assert teacher is not None and teacher.model.name == "deeplabv3"
        assert teacher.model.kwargs["backbone"] == "resnet101"
        assert teacher.checkpoint == Path("runs/cirkd_deeplabv3_r101_cityscapes/best.pt")
        assert {"name": "logits_kd", "T": 1.0, "weight": 1.0} in cfg.distill.methods
