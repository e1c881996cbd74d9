"""PSPNet: output contract, feature points, pyramid pooling, head widths."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segkd.distill.hooks import FeatureTaps
from segkd.models import PyramidPooling, build_model
from segkd.models.pspnet import pspnet, pspnet18, pspnet50


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return pspnet18(num_classes=5)


def test_training_mode_adds_aux_output(model: nn.Module) -> None:
    model.train()
    outputs = model(torch.randn(2, 3, 65, 65))
    assert set(outputs) == {"out", "aux"}
    assert outputs["out"].shape == outputs["aux"].shape == (2, 5, 65, 65)

    model.eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 65, 65))
    assert set(outputs) == {"out"}
    assert outputs["out"].shape == (1, 5, 65, 65)


def test_without_aux_head_there_is_no_aux_output_or_tap() -> None:
    model = pspnet(backbone="resnet18", num_classes=3, aux=False).train()
    assert set(model(torch.randn(2, 3, 33, 33))) == {"out"}
    assert "aux" not in model.feature_points and "aux_feat" not in model.feature_points


def test_every_feature_point_is_tapped_with_the_expected_shape(model: nn.Module) -> None:
    model.train()
    with FeatureTaps(model, {alias: alias for alias in model.feature_points}) as taps:
        model(torch.randn(2, 3, 65, 65))
        captured = taps.pop()
    shapes = {alias: tuple(t.shape[1:]) for alias, t in captured.items()}
    side = math.ceil(65 / 8)  # output stride 8: stage 4 keeps stage 2's resolution
    assert shapes == {
        "stage1": (64, 17, 17),
        "stage2": (128, side, side),
        "stage3": (256, side, side),
        "stage4": (512, side, side),
        "ppm": (512 + 4 * 128, side, side),
        "head": (512, side, side),
        "logits": (5, side, side),
        "aux_feat": (128, side, side),
        "aux": (5, side, side),
    }


def test_pyramid_pooling_concatenates_input_and_pooled_branches() -> None:
    ppm = PyramidPooling(in_channels=2, bins=(1, 2), reduced_channels=2).eval()
    for branch in ppm.branches:
        conv = branch[1][0]
        nn.init.zeros_(conv.weight)
        with torch.no_grad():
            conv.weight[0, 0, 0, 0] = 1.0  # channel 0 passes through, channel 1 is zero
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 2, 1, 1)
    with torch.no_grad():
        out = ppm(x)
    assert out.shape == (1, 2 + 2 * 2, 4, 4)
    assert torch.equal(out[:, :2], x)
    bn_scale = 1 / math.sqrt(1 + 1e-5)  # fresh BatchNorm in eval: running mean 0, var 1
    # bin 1: the global mean (7.5) everywhere
    torch.testing.assert_close(out[0, 2], torch.full((4, 4), 7.5 * bn_scale))
    assert torch.count_nonzero(out[0, 3]) == 0
    # bin 2: the quadrant means of 0..15 on a 4×4 grid are 2.5, 4.5, 10.5, 12.5, and
    # align_corners upsampling keeps them at the corners.
    corners = out[0, 4, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.tensor([2.5, 4.5, 10.5, 12.5]) * bn_scale)


def test_resnet50_widths_follow_semseg() -> None:
    model = pspnet50(num_classes=21)
    head_conv, aux_conv = model.head[0], model.aux_head[0]
    assert (head_conv.in_channels, head_conv.out_channels) == (2048 + 4 * 512, 512)
    assert (aux_conv.in_channels, aux_conv.out_channels) == (1024, 256)
    assert model.classifier[-1].out_channels == 21


def test_resnet18_aux_head_is_256_to_128(model: nn.Module) -> None:
    assert (model.aux_head[0].in_channels, model.aux_head[0].out_channels) == (256, 128)


def test_options_change_widths() -> None:
    model = build_model(
        "pspnet", backbone="resnet18", num_classes=2, bins=[1, 3], head_channels=32,
        aux_channels=16, ppm_channels=8, dropout=0.0,
    )
    assert model.head[0].in_channels == 512 + 2 * 8
    assert model.head[0].out_channels == 32
    assert model.aux_head[0].out_channels == 16
    assert model.classifier[0].p == 0.0


def test_light_student_backbone_works() -> None:
    model = pspnet(backbone="mobilenetv3_large_100", num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33))["out"].shape == (1, 4, 33, 33)


def test_param_groups_split_backbone_from_head(model: nn.Module) -> None:
    groups = model.param_groups()
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in groups["head"]}
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))
    assert any(p is model.classifier[-1].weight for p in groups["head"])


def test_gradients_reach_backbone_and_both_heads(model: nn.Module) -> None:
    model.train()
    model.zero_grad()
    outputs = model(torch.randn(2, 3, 33, 33))
    (outputs["out"].mean() + outputs["aux"].mean()).backward()
    assert model.backbone.conv1.weight.grad is not None
    assert model.aux_head[0].weight.grad is not None
    assert model.head[0].weight.grad is not None
