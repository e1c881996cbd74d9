"""The four-level fusion network: output contract, feature points, top-down wiring."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.hooks import FeatureTaps
from segkd.models import build_model
from segkd.models.fusion import fusion


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return fusion(backbone="resnet18", width=16)


@pytest.mark.parametrize("training", [True, False])
def test_one_logit_channel_at_input_size(model: nn.Module, training: bool) -> None:
    model.train(training)
    with torch.set_grad_enabled(training):
        outputs = model(torch.randn(1, 3, 64, 64))
    assert set(outputs) == {"out"}
    assert outputs["out"].shape == (1, 1, 64, 64)


def test_every_feature_point_is_tapped_with_the_expected_shape(model: nn.Module) -> None:
    model.eval()
    all_points = {alias: alias for alias in model.feature_points}
    with FeatureTaps(model, all_points) as taps, torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        shapes = {alias: tuple(t.shape[1:]) for alias, t in taps.pop().items()}
    expected = {"logits": (1, 16, 16)}
    for level, (channels, side) in enumerate([(64, 16), (128, 8), (256, 4), (512, 2)], start=1):
        expected[f"stage{level}"] = (channels, side, side)
        expected[f"reduced{level}"] = (16, side, side)
        expected[f"fused{level}"] = (16, side, side)
    assert shapes == expected


def test_fusion_runs_top_down(model: nn.Module) -> None:
    model.eval()
    taps = {f"{kind}{i}": f"{kind}{i}" for kind in ("reduced", "fused") for i in (1, 2, 3, 4)}
    with FeatureTaps(model, taps) as hooks, torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        captured = hooks.pop()
        torch.testing.assert_close(captured["fused4"], model.fusers[3](captured["reduced4"]))
        for level in (3, 2, 1):
            deeper = F.interpolate(
                captured[f"fused{level + 1}"], scale_factor=2, mode="bilinear", align_corners=False
            )
            expected = model.fusers[level - 1](captured[f"reduced{level}"] + deeper)
            torch.testing.assert_close(captured[f"fused{level}"], expected)


def test_output_stride_8_keeps_stage_4_at_stride_8() -> None:
    model = build_model("fusion", backbone="resnet18", output_stride=8).eval()
    with FeatureTaps(model, {"c4": "stage4"}) as taps, torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))["out"]
        assert taps.pop()["c4"].shape[-2:] == (8, 8)
    assert out.shape == (1, 1, 64, 64)


def test_light_student_backbone_works() -> None:
    model = fusion(backbone="efficientnet_lite0").eval()
    assert model.reducers[3][0].in_channels == 320
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["out"].shape == (1, 1, 64, 64)


def test_param_groups_split_backbone_from_head(model: nn.Module) -> None:
    groups = model.param_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}
    head_ids = {id(p) for p in groups["head"]}
    head_modules = (model.reducers, model.fusers, model.predictor)
    assert head_ids == {id(p) for module in head_modules for p in module.parameters()}
