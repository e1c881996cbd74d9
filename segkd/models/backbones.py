"""Backbones: timm models in ``features_only`` mode, optionally dilated, optionally with weights.

A backbone maps an image B×3×H×W to a list of feature maps, one per entry of ``out_indices``;
``backbone.feature_info.channels()`` / ``.reduction()`` / ``.module_name()`` describe them, so
heads never hard-code channel counts.
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path

import timm
from torch import nn

from segkd.models.packaged import resolve_weights
from segkd.models.weights import HUB_WEIGHTS, load_backbone_weights, require_hub_weights

logger = logging.getLogger(__name__)


def create_backbone(
    name: str,
    *,
    output_stride: int = 32,
    pretrained: str | Path | None = None,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    uniform_dilation: bool = False,
) -> nn.Module:
    """Create the timm model ``name`` as a multi-level feature extractor.

    Args:
        name: a timm model name, e.g. ``"resnet50"``, ``"resnet18"``, ``"mobilenetv3_large_100"``,
            ``"efficientnet_lite0"``.
        output_stride: 32 (plain), 16 or 8. Below 32 the last stages keep their resolution and
            use dilated convolutions instead (for ResNets at 8: stages 3 and 4, dilation 2 and 4).
        pretrained: a local weight file (torchvision, timm, or a checkpoint wrapping one); see
            :func:`segkd.models.weights.load_backbone_weights`. ``"imagenet"``: timm's hub
            weights, downloaded by timm; without internet it fails at once, naming the file to
            pass instead (:func:`segkd.models.weights.require_hub_weights`).
        out_indices: which stages to return (timm's numbering; 1..4 are the strides 4..32
            stages of a ResNet).
        uniform_dilation: how ResNet-style backbones (``layer1..layer4``) are dilated. timm and
            torchvision keep the previous dilation in the first block of a dilated stage;
            semseg's PSPNet dilates every 3×3 conv of the stage alike, which ``True`` follows.
            The weights are the same either way. Other families keep timm's dilation.

    Returns:
        The backbone; ``backbone(x)`` returns a list of B×C_i×H/r_i×W/r_i tensors.

    Example:
        >>> backbone = create_backbone("resnet18", output_stride=8)
        >>> backbone.feature_info.channels(), backbone.feature_info.reduction()
        ([64, 128, 256, 512], [4, 8, 8, 8])
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(
            f"backbone '{name}': output_stride must be 8, 16 or 32, got {output_stride}"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"unknown backbone '{name}'; close timm names: {close}")
    from_hub = pretrained == HUB_WEIGHTS
    if from_hub:
        require_hub_weights(name)
    backbone = timm.create_model(
        name,
        features_only=True,
        output_stride=output_stride,
        pretrained=from_hub,
        out_indices=tuple(out_indices),
    )
    if uniform_dilation and output_stride < 32:
        _dilate_resnet_stages_uniformly(backbone, name, output_stride)
    if pretrained is not None and not from_hub:
        load_backbone_weights(backbone, resolve_weights(pretrained))
    return backbone


def stage_module_paths(backbone: nn.Module, prefix: str = "") -> dict[str, str]:
    """``{"stage1": "<prefix>layer1", ...}``: the module producing each returned feature map."""
    names = backbone.feature_info.module_name()
    return {f"stage{i}": prefix + module for i, module in enumerate(names, start=1)}


def _dilate_resnet_stages_uniformly(backbone: nn.Module, name: str, output_stride: int) -> None:
    """Give every k×k conv (k > 1) of each dilated ResNet stage that stage's dilation."""
    if not hasattr(backbone, "layer1"):
        logger.debug("'%s' is not ResNet-style; it keeps timm's dilation pattern", name)
        return
    for index in range(1, 5):
        stage = getattr(backbone, f"layer{index}", None)
        if stage is None:
            continue  # pruned because out_indices stops before it
        # Undilated, layer{i} runs at stride 2**(i+1); what the output stride caps becomes dilation.
        nominal_stride = 2 ** (index + 1)
        dilation = nominal_stride // min(nominal_stride, output_stride)
        if dilation == 1:
            continue
        for module in stage.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
                module.dilation = (dilation, dilation)
                module.padding = tuple(dilation * (k - 1) // 2 for k in module.kernel_size)
                module.stride = (1, 1)
