"""What every segkd segmentation network shares: a backbone, feature points, parameter groups."""
from __future__ import annotations

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """Base class: subclasses set ``self.backbone`` and ``self.feature_points`` in ``__init__``.

    ``feature_points`` maps an alias (``"stage4"``, ``"head"``…) to a module path that
    :class:`segkd.distill.hooks.FeatureTaps` can hook.
    """

    backbone: nn.Module
    feature_points: dict[str, str]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``; the trainer gives the head a larger LR."""
        backbone_params = list(self.backbone.parameters())
        in_backbone = {id(p) for p in backbone_params}
        head_params = [p for p in self.parameters() if id(p) not in in_backbone]
        return {"backbone": backbone_params, "head": head_params}


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def resize_to(
    x: torch.Tensor, size: torch.Size | tuple[int, int], align_corners: bool
) -> torch.Tensor:
    """Bilinear resize of a B×C×h×w map to B×C×size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
