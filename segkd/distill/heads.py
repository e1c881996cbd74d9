"""Training-only networks that methods attach to the student: prediction heads, branches that
replicate the later stages (DHM, DKS), FRSKD's BiFPN self-teacher, BYOT's adaptation layers."""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.functional import resize_like
from segkd.distill.hooks import resolve_path


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


# --- branches that replicate the later stages of the student (DHM, DKS) ---

DECODERS = ("copy", "head")


def hookless_copy(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """Deep copy of ``module`` with every forward hook dropped.

    The student's modules carry the trainer's feature taps; a copied hook would still write into
    the student's tap store whenever the copy runs. ``memo`` is ``copy.deepcopy``'s.
    """
    clone = copy.deepcopy(module, memo)
    for sub in clone.modules():
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._forward_hooks_with_kwargs,
                      sub._forward_hooks_always_called, sub._forward_pre_hooks_with_kwargs):
            hooks.clear()
    return clone


def modules_after(model: nn.Module, fork: str, last: str, method: str) -> list[nn.Module]:
    """The modules that run after module ``fork`` up to and including module ``last``.

    Both must be children of one container that runs its children in order (ResNet's
    ``layer1..4``; timm EfficientNet's ``blocks.0..6``, where the feature maps come from blocks
    2, 4 and 6 and blocks 3 and 5 run between them).
    """
    fork_parent, _, fork_name = fork.rpartition(".")
    last_parent, _, last_name = last.rpartition(".")
    if fork_parent != last_parent:
        raise ValueError(f"{method}: stages '{fork}' and '{last}' are not children of one container; "
                         "a branch can only replicate consecutive children")
    container = model.get_submodule(fork_parent) if fork_parent else model
    names = [name for name, _ in container.named_children()]
    start, stop = names.index(fork_name), names.index(last_name)
    if stop <= start:
        raise ValueError(f"{method}: stage '{last}' does not come after '{fork}'")
    return [getattr(container, name) for name in names[start + 1: stop + 1]]


class StageBranch(nn.Module):
    """A branch forked after one stage of the student that replicates everything after it.

    ``segments[k]``: copies of the student's modules from one stage to the next (one per later
    stage). ``decoder``: the student without its backbone (:func:`fresh_decoder`), whose
    ``decode(features)`` reads the shared shallow features and the branch's own deeper ones
    (finest first), so the branch predicts with the inference network's design; or ``None`` and
    ``head``: a :class:`PredictionHead` on the branch's deepest map (set by the caller).

    ``forward(shared, size)``: the student's stage features up to the fork (finest first) →
    B×1×H×W logits at ``size``.
    """

    def __init__(self, segments: list[nn.Module], decoder: nn.Module | None) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.decoder = decoder
        self.head: PredictionHead | None = None

    def forward(self, shared: list[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        features = list(shared)
        for segment in self.segments:
            features.append(segment(features[-1]))
        if self.decoder is not None:
            logits = self.decoder.decode(features)
        else:
            assert self.head is not None, "decoder='head' needs the head built in setup()"
            logits = self.head(features[-1])
        return logits if logits.shape[-2:] == tuple(size) else F.interpolate(
            logits, size=size, mode="bilinear", align_corners=False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Copied stages train as backbone, the decoder (or head) as head."""
        backbone = list(self.segments.parameters())
        in_backbone = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if id(p) not in in_backbone]}


def build_branches(student: nn.Module, stages: Sequence[str], branch_from: Sequence[str],
                   decoder: str, method: str) -> nn.ModuleList:
    """One :class:`StageBranch` per ``branch_from`` stage, copied from ``student``'s current weights.

    ``stages``: the student's stages, finest first (feature points or module paths); ``decoder``:
    ``"copy"`` (needs a student with ``decode``, as the fusion network) or ``"head"``.
    """
    modules = dict(student.named_modules())
    paths = [resolve_path(student, stage) for stage in stages]
    missing = [p for p in paths if p not in modules]
    if missing:
        points = sorted(getattr(student, "feature_points", {}))
        raise KeyError(f"{method}: {type(student).__name__} has no module(s) {missing} for 'stages' "
                       f"{list(stages)}; its feature points: {points}")
    if decoder == "copy" and not (hasattr(student, "decode") and hasattr(student, "backbone")):
        raise ValueError(f"{method}: decoder='copy' needs a student with a backbone and a decode(features) "
                         f"method (the fusion network); {type(student).__name__} has none: use decoder='head'")
    branches = nn.ModuleList()
    for fork in branch_from:
        k = list(stages).index(fork)
        segments = [nn.Sequential(*map(hookless_copy, modules_after(student, paths[j - 1], paths[j], method)))
                    for j in range(k + 1, len(paths))]
        head = fresh_decoder(student) if decoder == "copy" else None
        branches.append(StageBranch(segments, head))
    return branches


def fresh_decoder(student: nn.Module) -> nn.Module:
    """The student without its backbone, every layer re-initialised: a decoder of the same design.

    Fresh weights, not the student's: a branch whose copied stages and decoder all equal the
    student's computes exactly ``out``, gets exactly its gradients and stays its replica, so
    every mimicking term would be zero for the whole run.
    """
    # the memo swaps the backbone for an empty module: only the decoder is copied
    decoder = hookless_copy(student, {id(student.backbone): nn.Identity()})
    for module in decoder.modules():
        if module is not decoder and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return decoder


# --- FRSKD's self-teacher ---


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
