"""Small training-only networks that methods attach to the student: prediction heads, BYOT's
adaptation layers and DKS's auxiliary branches. (DHM's stage replicas live in ``replicas``,
FRSKD's BiFPN self-teacher in ``bifpn``.)"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock


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
        logits = self(x)
        if logits.shape[-2:] != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


# --- BYOT's adaptation layers ---


def bottleneck(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1×1 reduce → 3×3 (``stride``) → 1×1 expand, each with BN + ReLU, as in ResNet's blocks."""
    mid = max(out_channels // 4, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def adaptation(shape: torch.Size, deepest: torch.Size) -> nn.Sequential:
    """Bottleneck blocks taking a C×h×w stage to the deepest tap's channels and (about) its size.

    One stride-2 block per halving (at least one block); the channels double per block like the
    backbone's stages, and the last block lands on the deepest channel count.
    """
    channels, out_ch = shape[1], deepest[1]
    steps = round(math.log2(shape[-2] / deepest[-2])) if shape[-2] > deepest[-2] else 0
    n_blocks = max(steps, 1)
    blocks = []
    for k in range(n_blocks):
        next_ch = out_ch if k == n_blocks - 1 else min(channels * 2, out_ch)
        blocks.append(bottleneck(channels, next_ch, stride=2 if k < steps else 1))
        channels = next_ch
    return nn.Sequential(*blocks)


# --- DKS's auxiliary branches ---


def residual_stage(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    """``blocks`` fresh ResNet basic blocks, the first changing channels and stride (1×1 shortcut)."""
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(out_channels))
    layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SynergyBranch(nn.Module):
    """DKS's auxiliary branch: freshly initialised residual stages from a fork stage down to the
    backbone's deepest stage, then a :class:`PredictionHead` (full-resolution logits).

    ``shapes``: the shapes of the fork stage and of every later stage (B×C_i×h_i×w_i, finest
    first). One :func:`residual_stage` per later stage gives its channels, with stride 2 where
    the backbone halves the size (1 where it dilates instead). ``forward(x, size)``: the fork
    stage's features → B×1×size logits.
    """

    def __init__(self, shapes: list[torch.Size], blocks: int, head_channels: int) -> None:
        super().__init__()
        stages = []
        for before, after in zip(shapes[:-1], shapes[1:]):
            stride = max(1, round(before[-2] / after[-2]))
            stages.append(residual_stage(int(before[1]), int(after[1]), stride, blocks))
        self.stages = nn.Sequential(*stages)
        self.head = PredictionHead(int(shapes[-1][1]), 1, head_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return self.head.forward_to(self.stages(x), size)
