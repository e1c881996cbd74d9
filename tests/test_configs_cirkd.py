"""The shipped CIRKD-protocol configs hold the protocol: Cityscapes, 40k iterations, batch 8, SGD 0.02, poly."""
from __future__ import annotations

from pathlib import Path

import pytest

from segkd.config import CONFIG_DIR, load_config

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
        assert {"name": "logits_kd", "temperature": 1.0, "weight": 1.0} in cfg.distill.methods


def test_the_af_dcd_config_trains_on_a_tiny_cityscapes_folder(tmp_path: Path) -> None:
    """The shipped command, shrunk by --set only, distilling from a (plain state-dict) DeepLabV3-R18 teacher."""
    import numpy as np
    import torch
    from PIL import Image

    from segkd.cli import main
    from segkd.models import build_model

    rng = np.random.default_rng(0)
    for split, n in [("train", 2), ("val", 1)]:
        for i in range(n):
            stem = f"city_{i:06d}_000019"
            for folder, name, array in [
                ("leftImg8bit", f"{stem}_leftImg8bit.png", rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)),
                ("gtFine", f"{stem}_gtFine_labelIds.png", rng.choice([7, 8, 26, 0], (64, 128)).astype(np.uint8)),
            ]:
                (tmp_path / folder / split / "city").mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(tmp_path / folder / split / "city" / name)
    small = [f"data.root={tmp_path}", "data.crop_size=128", "data.base_size=128", "data.batch_size=2",
             "data.num_workers=0", "model.pretrained=null", "train.max_iters=1", "train.progress=false"]
    torch.save(build_model("deeplabv3", backbone="resnet18", num_classes=19).state_dict(), tmp_path / "teacher.pth")
    student_dir = tmp_path / "student"
    assert main(["train", str(CONFIG_DIR / "cirkd_afdcd_deeplabv3_r101_to_r18_cityscapes.yaml"),
                 *(f"--set={s}" for s in [*small, f"output_dir={student_dir}",
                                          "distill.teacher.model.backbone=resnet18",
                                          f"distill.teacher.checkpoint={tmp_path / 'teacher.pth'}"])]) == 0
    history = (student_dir / "history.jsonl").read_text()
    assert '"afdcd/fd"' in history and '"afdcd/ctr"' in history and '"logits_kd/kd"' in history
