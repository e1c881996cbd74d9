"""Backbones: timm features_only models, dilation, light students."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from segkd.models import create_backbone, stage_module_paths


def _dilations(stage: nn.Module) -> set[int]:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    return {conv.dilation[0] for conv in convs}


def _strides(stage: nn.Module) -> set[int]:
    return {m.stride[0] for m in stage.modules() if isinstance(m, nn.Conv2d)}


def test_resnet_output_stride_8_keeps_stride_8_in_stages_3_and_4() -> None:
    backbone = create_backbone("resnet18", output_stride=8).eval()
    assert backbone.feature_info.reduction() == [4, 8, 8, 8]
    assert backbone.feature_info.channels() == [64, 128, 256, 512]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(64, 16, 16), (128, 8, 8), (256, 8, 8), (512, 8, 8)]
    assert _strides(backbone.layer3) == _strides(backbone.layer4) == {1}


def test_uniform_dilation_dilates_every_3x3_conv_of_a_stage() -> None:
    timm_style = create_backbone("resnet18", output_stride=8)
    # timm keeps the previous dilation in the first block's first conv.
    assert timm_style.layer3[0].conv1.dilation == (1, 1)
    assert timm_style.layer4[0].conv1.dilation == (2, 2)

    semseg_style = create_backbone("resnet18", output_stride=8, uniform_dilation=True)
    assert _dilations(semseg_style.layer2) == {1}
    assert _dilations(semseg_style.layer3) == {2}
    assert _dilations(semseg_style.layer4) == {4}
    assert semseg_style.layer4[0].conv1.padding == (4, 4)


def test_output_stride_16_dilates_only_stage_4() -> None:
    backbone = create_backbone("resnet18", output_stride=16, uniform_dilation=True)
    assert backbone.feature_info.reduction() == [4, 8, 16, 16]
    assert _dilations(backbone.layer3) == {1}
    assert _dilations(backbone.layer4) == {2}


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "efficientnet_lite0"])
def test_light_students_give_the_channels_they_declare(name: str) -> None:
    backbone = create_backbone(name, output_stride=8, uniform_dilation=True).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in features] == backbone.feature_info.channels()
    assert [32 // f.shape[-1] for f in features] == backbone.feature_info.reduction()


def test_stage_module_paths_name_real_modules() -> None:
    backbone = create_backbone("efficientnet_lite0")
    paths = stage_module_paths(backbone)
    modules = dict(backbone.named_modules())
    assert list(paths) == ["stage1", "stage2", "stage3", "stage4"]
    assert all(path in modules for path in paths.values())


def test_bad_names_and_strides_are_explained() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet5'.*resnet50"):
        create_backbone("resnet5")
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32, got 4"):
        create_backbone("resnet18", output_stride=4)
