"""The prediction head the self-distillation methods put on the student's features.

Each family's own networks sit beside it: BYOT's adaptation layers in ``byot_adapters``, DHM's and DKS's
side branches in ``side_branches`` and ``replicas``, FRSKD's BiFPN self-teacher in ``bifpn``, PSPSD's
pyramid branches in ``pyramids``."""
from __future__ import annotations

import torch
from torch import nn

from segkd.models.base import resize_to


class PredictionHead(nn.Sequential):
    """3×3 conv → BN → ReLU → 1×1 conv: a feature map B×C×h×w to logits B×K×h×w.

    ``forward_to(x, size)`` also upsamples the logits to ``size`` (the input image's H×W).
    """

    def __init__(self, in_channels: int, out_channels: int = 1, mid_channels: int = 64) -> None:
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 1),
        )

    def forward_to(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return resize_to(self(x), size, align_corners=False)
