"""The four-level fusion network: a small inference network for binary object segmentation.

Each backbone stage is reduced to a common width, then fused top-down (deepest first): the
deeper fused map is upsampled, added to the shallower reduced map, and refined by a 3×3 conv.
The finest fused map predicts one channel of logits. Self-distillation methods attach their
training-only branches to the feature points; the network itself stays small.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from segkd.models.backbones import create_backbone, stage_module_paths
from segkd.models.base import SegmentationModel, resize_to
from segkd.models.registry import register_model


class FusionNet(SegmentationModel):
    """Top-down fusion of every stage of ``backbone`` into one foreground logit map.

    ``forward(x)`` with x B×3×H×W returns ``{"out": B×1×H×W}`` logits (apply a sigmoid for
    probabilities).

    Feature points, for each level i (1 = finest): ``stage{i}`` (backbone, B×C_i×h_i×w_i),
    ``reduced{i}`` (B×width×h_i×w_i), ``fused{i}`` (B×width×h_i×w_i; ``fused1`` feeds the
    predictor), and ``logits`` (B×1×h_1×w_1, before upsampling).
    """

    def __init__(self, backbone: nn.Module, width: int = 64) -> None:
        super().__init__()
        channels = backbone.feature_info.channels()
        self.backbone = backbone
        self.reducers = nn.ModuleList(
            Conv2dNormActivation(in_channels, width, kernel_size=1) for in_channels in channels
        )
        self.fusers = nn.ModuleList(
            Conv2dNormActivation(width, width, kernel_size=3) for _ in channels
        )
        self.predictor = nn.Conv2d(width, 1, kernel_size=1)
        levels = range(1, len(channels) + 1)
        self.feature_points = {
            **stage_module_paths(backbone, prefix="backbone."),
            **{f"reduced{level}": f"reducers.{level - 1}" for level in levels},
            **{f"fused{level}": f"fusers.{level - 1}" for level in levels},
            "logits": "predictor",
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": resize_to(self.decode(self.backbone(x)), x.shape[-2:], align_corners=False)}

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Everything after the backbone: stage features (finest first) → B×1×h_1×w_1 logits.

        Self-distillation branches (DHM, DKS) run a copy of it over their own later stages.
        """
        reduced = [reduce(f) for reduce, f in zip(self.reducers, features, strict=True)]
        fused = self.fusers[-1](reduced[-1])
        for level in reversed(range(len(reduced) - 1)):
            deeper = resize_to(fused, reduced[level].shape[-2:], align_corners=False)
            fused = self.fusers[level](reduced[level] + deeper)
        return self.predictor(fused)


@register_model("fusion")
def fusion(
    *,
    backbone: str = "resnet50",
    pretrained: str | Path | None = None,
    width: int = 64,
    output_stride: int = 32,
) -> FusionNet:
    """Build the four-level fusion network.

    Args:
        backbone: timm model name (``resnet50`` as in the PSPSD set-up, ``resnet18``,
            ``mobilenetv3_large_100``, ``efficientnet_lite0``, …).
        pretrained: local ImageNet weight file for the backbone.
        width: common channel width of the reduced and fused maps.
        output_stride: backbone output stride (32: no dilation).

    Example:
        >>> model = fusion(backbone="resnet18")
        >>> model(torch.randn(1, 3, 64, 64))["out"].shape
        torch.Size([1, 1, 64, 64])
    """
    encoder = create_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    return FusionNet(encoder, width=width)
