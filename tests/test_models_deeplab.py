"""DeepLabV3 / DeepLabV3+ over timm backbones, torchvision's segmentation models, imported modules."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from segkd.distill.hooks import FeatureTaps
from segkd.models import build_model
from segkd.models.deeplab import deeplabv3, deeplabv3plus
from segkd.models.imported import ImportedModel, resolve_target


def _tap_all(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    with FeatureTaps(model, {alias: alias for alias in model.feature_points}) as taps:
        outputs = model(x)
        captured = taps.pop()
    return outputs, {alias: tuple(t.shape[1:]) for alias, t in captured.items()}


def test_deeplabv3_outputs_feature_points_and_cirkd_widths() -> None:
    torch.manual_seed(0)
    model = deeplabv3(backbone="resnet18", num_classes=5).train()
    outputs, shapes = _tap_all(model, torch.randn(2, 3, 65, 65))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"out": (2, 5, 65, 65), "aux": (2, 5, 65, 65)}
    side = math.ceil(65 / 8)
    # CIRKD's ResNet-18 DeepLabV3: ASPP 512 -> 128, FCN aux head 256 -> 64
    assert shapes == {
        "stage1": (64, 17, 17), "stage2": (128, side, side), "stage3": (256, side, side),
        "stage4": (512, side, side), "aspp": (128, side, side), "head": (128, side, side),
        "logits": (5, side, side), "aux_feat": (64, side, side), "aux": (5, side, side),
    }
    model.eval()
    with torch.no_grad():
        assert set(model(torch.randn(1, 3, 33, 33))) == {"out"}


def test_atrous_rates_follow_the_output_stride() -> None:
    def rates(model: nn.Module) -> list[int]:
        return [branch[0].dilation[0] for branch in model.aspp.convs[1:4]]

    assert rates(deeplabv3(backbone="resnet18", num_classes=2)) == [12, 24, 36]
    assert rates(deeplabv3(backbone="resnet18", num_classes=2, output_stride=16)) == [6, 12, 18]
    assert rates(deeplabv3plus(backbone="resnet18", num_classes=2)) == [6, 12, 18]
    with pytest.raises(ValueError, match="3 rates"):
        deeplabv3(backbone="resnet18", num_classes=2, atrous_rates=[1, 2])
    # dilated as PSPNet: every 3x3 conv of ResNet stage 4 at dilation 4 at output stride 8
    model = deeplabv3(backbone="resnet18", num_classes=2)
    assert {m.dilation for m in model.backbone.layer4.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)} == {(4, 4)}


def test_deeplabv3plus_decodes_at_stride_4() -> None:
    torch.manual_seed(0)
    model = deeplabv3plus(backbone="resnet18", num_classes=3, aux=False).train()
    outputs, shapes = _tap_all(model, torch.randn(2, 3, 64, 64))
    assert set(outputs) == {"out"} and outputs["out"].shape == (2, 3, 64, 64)
    assert shapes["low"] == (48, 16, 16) and shapes["head"] == (128, 16, 16)
    assert shapes["aspp"] == (128, 4, 4) and shapes["logits"] == (3, 16, 16)
    assert "aux" not in model.feature_points


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("deeplabv3_resnet50", {"stage4": (2048, 8, 8), "aspp": (256, 8, 8), "head": (256, 8, 8),
                                "logits": (3, 8, 8), "aux_feat": (256, 8, 8), "aux": (3, 8, 8)}),
        ("fcn_resnet50", {"stage3": (1024, 8, 8), "head": (512, 8, 8), "logits": (3, 8, 8)}),
        ("deeplabv3_mobilenet_v3_large", {"low": (40, 8, 8), "stage4": (960, 4, 4), "logits": (3, 4, 4)}),
        ("lraspp_mobilenet_v3_large", {"low": (40, 8, 8), "head": (128, 4, 4), "logits": (3, 8, 8)}),
    ],
)
def test_torchvision_models_by_name(name: str, points: dict[str, tuple]) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3).train()
    outputs, shapes = _tap_all(model, torch.randn(2, 3, 64, 64))
    expected = {"out", "aux"} if name != "lraspp_mobilenet_v3_large" else {"out"}
    assert set(outputs) == expected and all(v.shape == (2, 3, 64, 64) for v in outputs.values())
    assert {k: shapes[k] for k in points} == points


def test_torchvision_checkpoint_keys_load_unchanged_and_match_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ).eval()
    torch.save(reference.state_dict(), tmp_path / "fcn_resnet50_coco.pth")
    model = build_model("fcn_resnet50", num_classes=21, pretrained=tmp_path / "fcn_resnet50_coco.pth").eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x)["out"], reference(x)["out"], atol=1e-5)
    # another class count: everything but the two class layers is kept
    five = build_model("fcn_resnet50", num_classes=5, pretrained=tmp_path / "fcn_resnet50_coco.pth")
    assert torch.equal(five.classifier[0].weight, reference.classifier[0].weight)
    assert five.classifier[4].weight.shape == (5, 512, 1, 1)
    with pytest.raises(ValueError, match="must be a local weight file"):
        build_model("fcn_resnet50", pretrained="imagenet")
    with pytest.raises(ValueError, match="has no aux classifier"):
        build_model("lraspp_mobilenet_v3_large", aux=True)


class TupleNet(nn.Module):
    """A user's own network: logits at half resolution, returned with an aux map in a tuple."""

    def __init__(self, num_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.aux_cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.body(x))
        return self.cls(y), self.aux_cls(y)


def test_imported_module_is_wrapped_and_upsampled() -> None:
    torch.manual_seed(0)
    model = build_model("import", target=f"{__name__}:TupleNet", kwargs={"num_classes": 4}).train()
    assert isinstance(model, ImportedModel)
    assert sorted(model.state_dict()) == sorted(f"net.{k}" for k in model.net.state_dict())
    groups = model.param_groups()  # no backbone attribute: the whole network trains at the base LR
    assert len(groups["backbone"]) == 6 and groups["head"] == []
    outputs, shapes = _tap_all(model, torch.randn(2, 3, 16, 16))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"out": (2, 4, 16, 16), "aux": (2, 4, 16, 16)}
    assert shapes == {"net": (4, 8, 8), "body": (4, 8, 8), "cls": (4, 8, 8), "aux_cls": (4, 8, 8)}
    # the logits are the network's, bilinearly upsampled
    x = torch.randn(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        expected = nn.functional.interpolate(model.net(x)[0], size=(16, 16), mode="bilinear")
        assert set(model(x)) == {"out"} and torch.allclose(model(x)["out"], expected)


def test_imported_dict_output_and_bad_targets() -> None:
    model = build_model(
        "import", target="torchvision.models.segmentation:lraspp_mobilenet_v3_large",
        kwargs={"weights": None, "weights_backbone": None, "num_classes": 2},
    ).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32))["out"].shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        resolve_target("torch.nn.Conv2d")
    with pytest.raises(ValueError, match="module 'no_such_pkg.mod' does not import"):
        resolve_target("no_such_pkg.mod:f")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        resolve_target("torch.nn:Nope")
    with pytest.raises(ValueError, match="returned a int, not an nn.Module"):
        build_model("import", target="builtins:int")


def test_torchvision_imagenet_classification_file_loads_into_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "mobilenet_v3_large-8738ca79.pth")
    model = build_model("lraspp_mobilenet_v3_large", num_classes=2,
                        pretrained_backbone=tmp_path / "mobilenet_v3_large-8738ca79.pth")
    assert torch.equal(model.backbone["16"][0].weight, classifier.features[16][0].weight)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="foreign.pth does not fit the backbone"):
        build_model("lraspp_mobilenet_v3_large", num_classes=2, pretrained_backbone=tmp_path / "foreign.pth")


def test_imported_network_loads_its_own_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TupleNet(num_classes=2)
    torch.save(source.state_dict(), tmp_path / "tuple_net.pth")
    model = build_model("import", target=f"{__name__}:TupleNet", kwargs={"num_classes": 2},
                        pretrained=tmp_path / "tuple_net.pth")
    assert torch.equal(model.net.cls.weight, source.cls.weight)
    with pytest.raises(ValueError, match=r"tuple_net.pth does not fit .*:TupleNet.*shape mismatch"):
        build_model("import", target=f"{__name__}:TupleNet", kwargs={"num_classes": 5},
                    pretrained=tmp_path / "tuple_net.pth")
