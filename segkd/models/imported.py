"""Any importable network as a segkd model: ``model: {name: import, target: "pkg.mod:fn", kwargs: {...}}``.

The one escape hatch of the config: a factory named by its import path is called with the given
keyword arguments, and its output is brought to segkd's contract, so a user's own ``nn.Module`` is
a teacher or a student with no code in segkd.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.models.base import SegmentationModel, resize_to
from segkd.models.registry import register_model
from segkd.models.weights import describe_mismatch, read_state_dict


def resolve_target(target: str) -> Callable[..., Any]:
    """The object ``"package.module:attr.sub"`` names.

    Raises:
        ValueError: the string lacks ``:``, the module does not import, or the attribute is
            missing; the message names the target.
    """
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"model.target: expected 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model.target {target!r}: module '{module_name}' does not import ({error})") from error
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model.target {target!r}: '{module_name}' has no attribute '{attr_path}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model.target {target!r} is a {type(obj).__name__}, not a callable")
    return obj


class ImportedModel(SegmentationModel):
    """Wraps ``net`` so ``forward`` returns ``{"out": B×K×H×W}`` (and ``"aux"`` in training mode).

    The wrapped network may return a tensor, a tuple / list (first = out, second = aux) or a
    dict (``"out"`` or else its first value; ``"aux"`` kept); logits at a lower resolution are
    upsampled bilinearly to the input size. The whole network counts as the backbone for the
    learning rates unless it has a ``backbone`` attribute. Feature points: ``net`` and each of
    its direct children (``net.<child>``); any deeper module path works too.
    """

    def __init__(self, net: nn.Module, align_corners: bool = False) -> None:
        super().__init__()
        self.net = net
        self.align_corners = align_corners
        self.feature_points = {"net": "net"}
        self.feature_points.update({name: f"net.{name}" for name, _ in net.named_children()})

    @property  # type: ignore[override]
    def backbone(self) -> nn.Module:
        # A property, not a sub-module: registering ``net`` twice would duplicate its state keys.
        return getattr(self.net, "backbone", self.net)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        result = self.net(x)
        aux: torch.Tensor | None = None
        if isinstance(result, torch.Tensor):
            out = result
        elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
            out = result[0]
            aux = result[1] if len(result) > 1 and isinstance(result[1], torch.Tensor) else None
        elif isinstance(result, Mapping) and result:
            out = result["out"] if "out" in result else next(iter(result.values()))
            aux = result.get("aux")
        else:
            raise TypeError(
                f"imported model {type(self.net).__name__} returned {type(result).__name__}; "
                "expected a tensor, a tuple of tensors or a dict with 'out'"
            )
        if out.dim() != 4:
            raise TypeError(f"imported model's logits must be B×C×H×W, got shape {tuple(out.shape)}")
        outputs = {"out": resize_to(out, size, self.align_corners)}
        if self.training and aux is not None:
            outputs["aux"] = resize_to(aux, size, self.align_corners)
        return outputs


@register_model("import")
def import_model(
    *,
    target: str,
    kwargs: dict[str, Any] | None = None,
    pretrained: str | Path | None = None,
    align_corners: bool = False,
) -> ImportedModel:
    """Build ``target(**kwargs)`` and wrap it (see :class:`ImportedModel`).

    Args:
        target: ``"package.module:factory"``; a class or a function returning an ``nn.Module``.
        kwargs: keyword arguments of the factory (e.g. its class count).
        pretrained: a local state dict of the network (its own key names), loaded strictly.
        align_corners: bilinear upsampling mode of the logits.

    A teacher's segkd-foreign checkpoint holds the network's own keys: give
    ``distill.teacher.key_map: {"": "net."}`` so they land in the wrapper.

    Example:
        >>> model = import_model(target="torchvision.models.segmentation:fcn_resnet50",
        ...                      kwargs={"weights": None, "weights_backbone": None, "num_classes": 3})
    """
    factory = resolve_target(target)
    net = factory(**(kwargs or {}))
    if not isinstance(net, nn.Module):
        raise ValueError(f"model.target {target!r} returned a {type(net).__name__}, not an nn.Module")
    if pretrained is not None:
        state = read_state_dict(pretrained)
        problems = describe_mismatch(state, net.state_dict())
        if problems:
            raise ValueError(f"weights file {pretrained} does not fit {target}: {problems}")
        net.load_state_dict(state, strict=False)
    return ImportedModel(net, align_corners=align_corners)
