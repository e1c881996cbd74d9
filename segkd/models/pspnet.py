"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017), as in the semseg code.

A dilated backbone (output stride 8), a pyramid pooling module on its last stage, a 3×3 conv
classifier, and an auxiliary head on stage 3 used for deep supervision during training.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from segkd.models.backbones import create_backbone, stage_module_paths
from segkd.models.base import SegmentationModel, resize_to
from segkd.models.registry import register_model


class PyramidPooling(nn.Module):
    """Pool the input to each bin size, reduce it with 1×1 conv-BN-ReLU, upsample, concatenate.

    Maps B×C×h×w to B×(C + len(bins)·reduced_channels)×h×w.
    """

    def __init__(
        self,
        in_channels: int,
        bins: Sequence[int],
        reduced_channels: int,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(bin_size),
                Conv2dNormActivation(in_channels, reduced_channels, kernel_size=1),
            )
            for bin_size in bins
        )
        self.out_channels = in_channels + len(bins) * reduced_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize_to(branch(x), size, self.align_corners) for branch in self.branches]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(SegmentationModel):
    """PSPNet over any backbone from :func:`segkd.models.backbones.create_backbone`.

    ``forward(x)`` with x B×3×H×W returns ``{"out": B×K×H×W}`` logits, plus ``"aux"``
    (B×K×H×W, from stage 3) in training mode when the aux head exists.

    Feature points: ``stage1..stage4`` (backbone), ``ppm`` (the concatenated pyramid),
    ``head`` (the head_channels-wide feature before dropout), ``logits`` (main logits before
    upsampling), and with the aux head ``aux_feat`` (its feature before dropout) and ``aux``
    (aux logits before upsampling).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        aux: bool = True,
        bins: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        head_channels: int = 512,
        aux_channels: int | None = None,
        ppm_channels: int | None = None,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        channels = backbone.feature_info.channels()
        last_channels, stage3_channels = channels[-1], channels[-2]
        self.align_corners = align_corners
        self.backbone = backbone
        if ppm_channels is None:
            ppm_channels = last_channels // len(bins)
        self.ppm = PyramidPooling(last_channels, bins, ppm_channels, align_corners)
        self.head = Conv2dNormActivation(self.ppm.out_channels, head_channels, kernel_size=3)
        self.classifier = nn.Sequential(
            nn.Dropout2d(dropout), nn.Conv2d(head_channels, num_classes, 1)
        )
        self.feature_points = {
            **stage_module_paths(backbone, prefix="backbone."),
            "ppm": "ppm",
            "head": "head",
            "logits": "classifier",
        }
        self.aux_head: nn.Module | None = None
        self.aux_classifier: nn.Module | None = None
        if aux:
            # semseg: 1024 → 256 for ResNet-50, 256 → 128 for ResNet-18.
            if aux_channels is None:
                aux_channels = min(256, stage3_channels // 2)
            self.aux_head = Conv2dNormActivation(stage3_channels, aux_channels, kernel_size=3)
            self.aux_classifier = nn.Sequential(
                nn.Dropout2d(dropout), nn.Conv2d(aux_channels, num_classes, 1)
            )
            self.feature_points.update(aux_feat="aux_head", aux="aux_classifier")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        logits = self.classifier(self.head(self.ppm(features[-1])))
        outputs = {"out": resize_to(logits, size, self.align_corners)}
        if self.training and self.aux_head is not None and self.aux_classifier is not None:
            aux_logits = self.aux_classifier(self.aux_head(features[-2]))
            outputs["aux"] = resize_to(aux_logits, size, self.align_corners)
        return outputs


@register_model("pspnet")
def pspnet(
    *,
    backbone: str = "resnet50",
    num_classes: int = 21,
    pretrained: str | Path | None = None,
    aux: bool = True,
    bins: Sequence[int] = (1, 2, 3, 6),
    dropout: float = 0.1,
    output_stride: int = 8,
    head_channels: int = 512,
    aux_channels: int | None = None,
    ppm_channels: int | None = None,
    align_corners: bool = True,
) -> PSPNet:
    """Build a PSPNet.

    Args:
        backbone: timm model name (``resnet50``, ``resnet18``, ``mobilenetv3_large_100``, …).
        num_classes: K, the number of output channels.
        pretrained: local ImageNet weight file for the backbone (torchvision or timm format).
        aux: build the stage-3 auxiliary head (its output appears only in training mode).
        bins: pyramid pooling output sizes.
        dropout: Dropout2d probability before both classifiers.
        output_stride: backbone output stride; 8 as in the paper (ResNet stages 3 and 4 dilated
            by 2 and 4, every 3×3 conv of the stage alike, as in semseg).
        head_channels: width of the 3×3 conv after the pyramid (512).
        aux_channels: width of the aux head; default ``min(256, C3 / 2)``, which gives semseg's
            1024 → 256 (ResNet-50) and 256 → 128 (ResNet-18).
        ppm_channels: width of each pyramid branch; default ``C4 / len(bins)``.
        align_corners: bilinear upsampling mode; True as in semseg (inputs of size 8k + 1).

    Example:
        >>> model = pspnet(backbone="resnet18", num_classes=21)
        >>> model.eval()(torch.randn(1, 3, 65, 65))["out"].shape
        torch.Size([1, 21, 65, 65])
    """
    encoder = create_backbone(
        backbone, output_stride=output_stride, pretrained=pretrained, uniform_dilation=True
    )
    return PSPNet(
        encoder,
        num_classes,
        aux=aux,
        bins=tuple(bins),
        dropout=dropout,
        head_channels=head_channels,
        aux_channels=aux_channels,
        ppm_channels=ppm_channels,
        align_corners=align_corners,
    )


def _with_backbone(backbone: str, name: str) -> Callable[..., PSPNet]:
    """A variant of :func:`pspnet` with ``backbone`` fixed; its other options are unchanged."""

    def builder(**kwargs: Any) -> PSPNet:
        return pspnet(backbone=backbone, **kwargs)

    # Expose pspnet's options (minus backbone) so configs and build_model can check keys.
    options = [p for p in inspect.signature(pspnet).parameters.values() if p.name != "backbone"]
    signature = inspect.Signature(options, return_annotation=PSPNet)
    builder.__signature__ = signature  # type: ignore[attr-defined]
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"PSPNet with a dilated {backbone} backbone; options as :func:`pspnet`."
    return register_model(name)(builder)


pspnet50 = _with_backbone("resnet50", "pspnet50")
pspnet18 = _with_backbone("resnet18", "pspnet18")
