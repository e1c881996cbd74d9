"""PSPSD's auxiliary network: one pyramid branch per feature level, fused top-down."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import Conv2dNormActivation

from segkd.distill.functional import resize_like
from segkd.distill.heads import PredictionHead
from segkd.models.pspnet import PyramidPooling


def reduced_pyramid_pooling(in_channels: int, width: int, bins: Sequence[int]) -> nn.Sequential:
    """PSPNet's pyramid pooling between a 1×1 reduction and a 3×3 merge: B×C×h×w → B×width×h×w.

    The input is first reduced to ``width`` (conv-BN-ReLU) so a 2048-channel stage stays cheap;
    :class:`~segkd.models.pspnet.PyramidPooling` pools it to each bin, maps 1×1 and upsamples
    back beside it; the concatenation is merged by a 3×3 conv-BN-ReLU. Train with batches ≥ 2.
    """
    pooling = PyramidPooling(width, bins, width, align_corners=False)
    return nn.Sequential(Conv2dNormActivation(in_channels, width, kernel_size=1), pooling,
                         Conv2dNormActivation(pooling.out_channels, width, kernel_size=3))


class PyramidBranches(nn.Module):
    """The auxiliary self-distillation network: one pyramid branch per level, fused top-down.

    ``pyramid="ppm"``: :func:`reduced_pyramid_pooling` (``bins``); ``"aspp"``: torchvision's
    DeepLab-v3 ASPP (``rates``; rate 1 is its 1×1 branch; it keeps DeepLab's dropout 0.5).
    ``forward(features, size)`` takes the levels shallow → deep (B×C_i×h_i×w_i) and returns
    ``(fused, logits)``, both shallow → deep: ``fused[i]`` B×width×h_i×w_i, ``logits[i]`` B×1×H×W
    at ``size``. ``fused[0]`` (finest, holding every deeper level) gives the teacher prediction.
    """

    def __init__(self, in_channels: Sequence[int], pyramid: str, bins: Sequence[int],
                 rates: Sequence[int], width: int) -> None:
        super().__init__()
        atrous = [r for r in rates if r != 1]  # torchvision's ASPP always has the 1×1 branch
        self.pyramids = nn.ModuleList(
            reduced_pyramid_pooling(c, width, bins) if pyramid == "ppm" else ASPP(c, atrous, width)
            for c in in_channels
        )
        self.merges = nn.ModuleList(Conv2dNormActivation(width, width, kernel_size=3) for _ in in_channels[:-1])
        self.heads = nn.ModuleList(PredictionHead(width) for _ in in_channels)

    def forward(self, features: Sequence[torch.Tensor],
                size: torch.Size) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fused: list[torch.Tensor] = []
        for i in reversed(range(len(features))):
            level = self.pyramids[i](features[i])
            if fused:
                level = self.merges[i](level + resize_like(fused[0], level))
            fused.insert(0, level)
        logits = [head.forward_to(f, size) for head, f in zip(self.heads, fused, strict=True)]
        return fused, logits
