"""BYOT's adaptation layers: bottleneck blocks that take a shallow stage to the deepest stage's shape."""
from __future__ import annotations

import math

import torch
from torch import nn


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
