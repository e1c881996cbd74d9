"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017)
and DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018)
over any timm backbone, with the FCN auxiliary head of the CIRKD / mmseg code bases.

The backbone is dilated as PSPNet's is (:func:`segkd.models.backbones.create_backbone`). The ASPP
module is torchvision's; its atrous rates follow the output stride (12/24/36 at 8, 6/12/18 at 16).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import Conv2dNormActivation

from segkd.models.backbones import create_backbone, stage_module_paths
from segkd.models.base import SegmentationModel, resize_to
from segkd.models.registry import register_model

# DeepLab's rates are tied to the feature resolution: halving the stride doubles them.
ATROUS_RATES: dict[int, tuple[int, int, int]] = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


class FCNHead(nn.Sequential):
    """3×3 conv-BN-ReLU to C/4 channels, dropout, 1×1 classifier (the CIRKD / mmseg aux head)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        inter = max(in_channels // 4, 1)
        super().__init__(
            Conv2dNormActivation(in_channels, inter, kernel_size=3),
            nn.Dropout2d(dropout),
            nn.Conv2d(inter, num_classes, 1),
        )


class DeepLabV3(SegmentationModel):
    """DeepLabV3 / DeepLabV3+ over a backbone from :func:`create_backbone`.

    ``forward(x)`` with x B×3×H×W returns ``{"out": B×K×H×W}``, plus ``"aux"`` (B×K×H×W, from
    the second-to-last stage) in training mode when the aux head exists.

    With ``decoder=True`` (DeepLabV3+), the ASPP output is upsampled to the first returned stage
    (stride 4), concatenated with that stage reduced to 48 channels, and refined by two 3×3 convs.

    Feature points: ``stage1..stage4``, ``aspp`` (the projected ASPP output), ``head`` (the
    feature before dropout and classifier), ``logits`` (logits before upsampling), with the
    decoder ``low`` (the reduced low-level feature), and with the aux head ``aux_feat`` and
    ``aux``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        atrous_rates: Sequence[int],
        aux: bool = True,
        decoder: bool = False,
        aspp_channels: int | None = None,
        low_channels: int = 48,
        dropout: float = 0.1,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        channels = backbone.feature_info.channels()
        self.backbone = backbone
        self.align_corners = align_corners
        if aspp_channels is None:
            # CIRKD: 2048 → 256 (ResNet-50/101), 512 → 128 (ResNet-18).
            aspp_channels = min(256, max(channels[-1] // 4, 8))
        self.aspp = ASPP(channels[-1], list(atrous_rates), aspp_channels)
        self.low: nn.Module | None = None
        head_in = aspp_channels
        if decoder:
            self.low = Conv2dNormActivation(channels[0], low_channels, kernel_size=1)
            head_in = aspp_channels + low_channels
        layers = [Conv2dNormActivation(head_in, aspp_channels, kernel_size=3)]
        if decoder:
            layers.append(Conv2dNormActivation(aspp_channels, aspp_channels, kernel_size=3))
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout2d(dropout), nn.Conv2d(aspp_channels, num_classes, 1)
        )
        self.feature_points = {
            **stage_module_paths(backbone, prefix="backbone."),
            "aspp": "aspp",
            "head": "head",
            "logits": "classifier",
        }
        if decoder:
            self.feature_points["low"] = "low"
        self.aux_head: nn.Module | None = None
        if aux:
            self.aux_head = FCNHead(channels[-2], num_classes, dropout)
            self.feature_points.update(aux_feat="aux_head.0", aux="aux_head")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        y = self.aspp(features[-1])
        if self.low is not None:
            low = self.low(features[0])
            y = torch.cat([resize_to(y, low.shape[-2:], self.align_corners), low], dim=1)
        logits = self.classifier(self.head(y))
        outputs = {"out": resize_to(logits, size, self.align_corners)}
        if self.training and self.aux_head is not None:
            outputs["aux"] = resize_to(self.aux_head(features[-2]), size, self.align_corners)
        return outputs


def _build(
    *,
    backbone: str,
    num_classes: int,
    pretrained: str | Path | None,
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    decoder: bool,
    **kwargs: object,
) -> DeepLabV3:
    if atrous_rates is None:
        if output_stride not in ATROUS_RATES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        atrous_rates = ATROUS_RATES[output_stride]
    if len(atrous_rates) != 3:
        raise ValueError(f"atrous_rates needs 3 rates, got {list(atrous_rates)}")
    encoder = create_backbone(
        backbone, output_stride=output_stride, pretrained=pretrained, uniform_dilation=True
    )
    return DeepLabV3(
        encoder, num_classes, atrous_rates=atrous_rates, decoder=decoder, **kwargs  # type: ignore[arg-type]
    )


@register_model("deeplabv3")
def deeplabv3(
    *,
    backbone: str = "resnet101",
    num_classes: int = 19,
    pretrained: str | Path | None = None,
    aux: bool = True,
    output_stride: int = 8,
    atrous_rates: Sequence[int] | None = None,
    aspp_channels: int | None = None,
    dropout: float = 0.1,
    align_corners: bool = True,
) -> DeepLabV3:
    """Build a DeepLabV3 (the CIRKD teacher is ``backbone="resnet101"``, students ``resnet18``).

    Args:
        backbone: timm model name.
        num_classes: K, the number of output channels.
        pretrained: a local ImageNet weight file for the backbone, or ``"imagenet"`` for timm's
            hub weights (needs internet).
        aux: build the FCN aux head on the second-to-last stage (training-mode output only).
        output_stride: 8 (rates 12/24/36) or 16 (rates 6/12/18).
        atrous_rates: override the three ASPP rates.
        aspp_channels: ASPP / head width; default ``min(256, C4 / 4)`` (256 for ResNet-101,
            128 for ResNet-18, as CIRKD).
        dropout: Dropout2d probability before both classifiers (the ASPP projection has its own
            0.5).
        align_corners: bilinear upsampling mode.

    Example:
        >>> model = deeplabv3(backbone="resnet18", num_classes=19)
        >>> model.eval()(torch.randn(1, 3, 65, 65))["out"].shape
        torch.Size([1, 19, 65, 65])
    """
    return _build(
        backbone=backbone, num_classes=num_classes, pretrained=pretrained,
        output_stride=output_stride, atrous_rates=atrous_rates, decoder=False, aux=aux,
        aspp_channels=aspp_channels, dropout=dropout, align_corners=align_corners,
    )


@register_model("deeplabv3plus")
def deeplabv3plus(
    *,
    backbone: str = "resnet101",
    num_classes: int = 19,
    pretrained: str | Path | None = None,
    aux: bool = True,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    aspp_channels: int | None = None,
    low_channels: int = 48,
    dropout: float = 0.1,
    align_corners: bool = True,
) -> DeepLabV3:
    """Build a DeepLabV3+: DeepLabV3 plus a decoder on the stride-4 stage (output stride 16).

    Args:
        low_channels: width the stride-4 feature is reduced to before concatenation (48).
        Others: as :func:`deeplabv3`.
    """
    return _build(
        backbone=backbone, num_classes=num_classes, pretrained=pretrained,
        output_stride=output_stride, atrous_rates=atrous_rates, decoder=True, aux=aux,
        aspp_channels=aspp_channels, low_channels=low_channels, dropout=dropout,
        align_corners=align_corners,
    )
