"""FRSKD's self-teacher: a BiFPN that refines multi-level features and predicts from them."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.functional import resize_like
from segkd.distill.heads import PredictionHead


class FastFusion(nn.Module):
    """BiFPN node: fast normalised fusion, then a 3×3 conv-BN-ReLU.

    ``Σ relu(w_i)·x_i / (Σ relu(w_i) + ε)`` over B×width×h×w inputs already resized to one size.
    """

    def __init__(self, n_inputs: int, width: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_inputs))
        self.eps = eps
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        fused = sum(wi * x for wi, x in zip(w, inputs, strict=True)) / (w.sum() + self.eps)
        return self.conv(fused)


class BiFPNLayer(nn.Module):
    """One BiFPN layer over n levels of B×width×h_i×w_i maps (finest first): a top-down path,
    then a bottom-up path whose middle nodes also read the layer's input (EfficientDet's design).

    Upsampling is bilinear, downsampling adaptive max-pooling (any stride ratio works).
    """

    def __init__(self, n_levels: int, width: int) -> None:
        super().__init__()
        self.top_down = nn.ModuleList(FastFusion(2, width) for _ in range(n_levels - 1))
        # middle levels fuse input + top-down + shallower; the deepest has no top-down node
        self.bottom_up = nn.ModuleList(
            FastFusion(3 if i < n_levels - 1 else 2, width) for i in range(1, n_levels)
        )

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(inputs)
        top_down = [inputs[-1]]
        for i in reversed(range(n - 1)):
            top_down.insert(0, self.top_down[i]([inputs[i], resize_like(top_down[0], inputs[i])]))
        out = [top_down[0]]
        for i in range(1, n):
            shallower = F.adaptive_max_pool2d(out[-1], inputs[i].shape[-2:])
            fused = [inputs[i], top_down[i], shallower] if i < n - 1 else [inputs[i], shallower]
            out.append(self.bottom_up[i - 1](fused))
        return out


class BiFPNSelfTeacher(nn.Module):
    """FRSKD's self-teacher: lateral 1×1 convs to ``width``, ``layers`` stacked BiFPN layers (two in
    the official segmentation code), and a prediction head on the finest refined level.

    ``forward(features, size)``: levels finest → deepest (B×C_i×h_i×w_i) → ``(refined, logits)``,
    ``refined[i]`` B×width×h_i×w_i and ``logits`` B×1×H×W at ``size`` (segmentation needs the
    fine grid; the classification paper predicts from the deepest).
    """

    def __init__(self, in_channels: Sequence[int], width: int, layers: int = 2) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width))
            for c in in_channels
        )
        self.layers = nn.ModuleList(BiFPNLayer(len(in_channels), width) for _ in range(layers))
        self.head = PredictionHead(width)

    def forward(
        self, features: Sequence[torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        refined = [conv(f) for conv, f in zip(self.laterals, features, strict=True)]
        for layer in self.layers:
            refined = layer(refined)
        return refined, self.head.forward_to(refined[0], size)


