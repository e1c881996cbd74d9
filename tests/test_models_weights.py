"""Loading local weight files into backbones: torchvision, timm, wrapped, mapped by order."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision

from segkd.models import create_backbone, load_backbone_weights, read_state_dict, remap_by_order
from segkd.models.pspnet import pspnet18


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18-5c106cde.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("weights") / "resnet50-19c8e357.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_torchvision_resnet50_file_loads(resnet50_file: Path) -> None:
    source = torch.load(resnet50_file)
    backbone = create_backbone("resnet50", output_stride=8, pretrained=resnet50_file)
    target = backbone.state_dict()
    for key in ("conv1.weight", "layer3.5.conv3.weight", "layer4.2.bn3.running_var"):
        assert torch.equal(target[key], source[key]), key


def test_torchvision_resnet18_file_loads_into_pspnet18(resnet18_file: Path) -> None:
    source = torch.load(resnet18_file)
    model = pspnet18(num_classes=3, pretrained=resnet18_file)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])
    assert torch.equal(model.backbone.bn1.running_mean, source["bn1.running_mean"])


def test_old_files_without_num_batches_tracked_and_wrapped_checkpoints_load(
    resnet18_file: Path, tmp_path: Path
) -> None:
    source = torch.load(resnet18_file)
    old_style = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in old_style.items()}}
    whole_model = {
        "model": {**{f"backbone.{k}": v for k, v in source.items()}, "head.0.weight": torch.ones(1)}
    }
    for name, content in [("wrapped.pth", wrapped), ("whole_model.pth", whole_model)]:
        torch.save(content, tmp_path / name)
        backbone = create_backbone("resnet18", pretrained=tmp_path / name)
        loaded = backbone.layer2[0].downsample[0].weight
        assert torch.equal(loaded, source["layer2.0.downsample.0.weight"]), name


def test_a_file_of_another_depth_is_refused_with_the_keys(
    resnet18_file: Path, resnet50_file: Path
) -> None:
    with pytest.raises(ValueError) as small_into_big:
        create_backbone("resnet50", pretrained=resnet18_file)
    message = str(small_into_big.value)
    assert str(resnet18_file) in message and "'resnet50'" in message
    assert "missing key(s) [layer1.0.conv3.weight" in message
    first_mismatch = "layer1.0.conv1.weight: file (64, 64, 3, 3) vs model (64, 64, 1, 1)"
    assert f"shape mismatch(es) [{first_mismatch}" in message

    with pytest.raises(ValueError, match=r"unexpected key\(s\) \[layer1\.0\.conv3\.weight"):
        create_backbone("resnet18", pretrained=resnet50_file)


def test_error_counts_every_key_but_shows_a_few(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pth"
    torch.save({f"foo{i}.weight": torch.zeros(1) for i in range(6)}, path)
    backbone = create_backbone("resnet18")
    expected_missing = sum(not k.endswith("num_batches_tracked") for k in backbone.state_dict())
    with pytest.raises(ValueError) as error:
        load_backbone_weights(backbone, path)
    message = str(error.value)
    assert f"{expected_missing} missing key(s)" in message
    shown = "foo0.weight, foo1.weight, foo2.weight, foo3.weight, … (2 more)"
    assert f"6 unexpected key(s) [{shown}]" in message
    assert "0 shape mismatch(es)" in message


def test_deep_stem_resnet_gets_a_hint(resnet18_file: Path, tmp_path: Path) -> None:
    state = torch.load(resnet18_file)
    state["conv2.weight"] = torch.zeros(64, 64, 3, 3)
    state["conv3.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(state, tmp_path / "deep_stem.pth")
    with pytest.raises(ValueError, match="deep-stem ResNet"):
        create_backbone("resnet18", pretrained=tmp_path / "deep_stem.pth")


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_state_dict(tmp_path / "nowhere.pth")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "no_weights.pth")
    no_state = r"no_weights.pth holds no state dict.*\['epoch', 'optimizer'\]"
    with pytest.raises(ValueError, match=no_state):
        read_state_dict(tmp_path / "no_weights.pth")
    (tmp_path / "text.pth").write_text("not a tensor file")
    with pytest.raises(ValueError, match="text.pth cannot be read"):
        read_state_dict(tmp_path / "text.pth")


def test_remap_by_order_pairs_tensors_and_skips_batch_counters() -> None:
    source = {
        "_stem.weight": torch.randn(4, 3),
        "_bn0.weight": torch.randn(4),
        "_bn0.num_batches_tracked": torch.tensor(7),
        "_fc.weight": torch.randn(2, 4),
    }
    template = {
        "stem.weight": torch.empty(4, 3),
        "bn.weight": torch.empty(4),
        "bn.num_batches_tracked": torch.tensor(0),
        "head.weight": torch.empty(2, 4),
    }
    remapped = remap_by_order(source, template, source_name="lite.pth")
    assert list(remapped) == ["stem.weight", "bn.weight", "head.weight"]
    assert remapped["bn.weight"] is source["_bn0.weight"]
    assert remapped["head.weight"] is source["_fc.weight"]

    with pytest.raises(ValueError, match="lite.pth has 2 tensors but the model has 3"):
        short = {k: source[k] for k in ("_stem.weight", "_fc.weight")}
        remap_by_order(short, template, source_name="lite.pth")
    swapped = {k: source[k] for k in ("_stem.weight", "_fc.weight", "_bn0.weight")}
    wrong_pair = r"tensor #1 '_fc.weight' \(2, 4\) does not match the model's 'bn.weight' \(4,\)"
    with pytest.raises(ValueError, match=wrong_pair):
        remap_by_order(swapped, template, source_name="lite.pth")


def test_efficientnet_lite0_in_lukemelas_naming_loads_by_order(tmp_path: Path) -> None:
    # Same tensors, same order, foreign names: what the lukemelas EfficientNet-Lite0 file holds.
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    foreign = {
        ("_conv_stem.weight" if i == 0 else f"_blocks.{i}.tensor"): value
        for i, (key, value) in enumerate(reference.items())
        if not key.endswith("num_batches_tracked")
    }
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(foreign, path)

    backbone = create_backbone("efficientnet_lite0", pretrained=path)
    loaded = backbone.state_dict()
    for key in ("conv_stem.weight", "blocks.3.1.conv_pwl.weight", "blocks.6.0.bn3.running_mean"):
        assert torch.equal(loaded[key], reference[key]), key

    # resnet18 with its fc: 20 convs + 20 BNs × 4 tensors + 2 = 102
    count_mismatch = r"efficientnet-lite0-57934424.pth has 247 tensors but the model has 102"
    with pytest.raises(ValueError, match=count_mismatch):
        create_backbone("resnet18", pretrained=path)
