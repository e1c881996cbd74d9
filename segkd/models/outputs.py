"""A segmentation network's forward result, whatever its form, as segkd's output dict."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _resized(logits: torch.Tensor, size: Sequence[int] | None, align_corners: bool) -> torch.Tensor:
    if size is None or tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def model_outputs(result: Any, size: Sequence[int] | None = None, *, align_corners: bool = False,
                  who: str = "model") -> dict[str, torch.Tensor]:
    """``{"out": B×C×H×W logits}`` (and ``"aux"`` when the model gives one) from any usual form.

    Understood: a tensor; a tuple or list (first = out, second = aux when it is a tensor); a dict
    or ``OrderedDict`` as torchvision's models return (``"out"``, else ``"logits"``, else its first
    value; ``"aux"`` kept, other keys too); an object with ``.logits`` (Hugging Face's
    ``SemanticSegmenterOutput``). With ``size`` (H, W), maps at another resolution are upsampled
    bilinearly to it; a dict already holding ``"out"`` at ``size`` comes back with the same tensors.

    Example:
        >>> model_outputs(torch.zeros(2, 3, 8, 8), (32, 32))["out"].shape
        torch.Size([2, 3, 32, 32])
    """
    if isinstance(result, torch.Tensor):
        outputs: dict[str, Any] = {"out": result}
    elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
        outputs = {"out": result[0]}
        if len(result) > 1 and isinstance(result[1], torch.Tensor):
            outputs["aux"] = result[1]
    elif isinstance(result, Mapping) and result:
        outputs = dict(result)
        if "out" not in outputs:
            outputs["out"] = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    elif isinstance(getattr(result, "logits", None), torch.Tensor):
        outputs = {"out": result.logits}
    else:
        raise TypeError(f"{who} returned {type(result).__name__}; expected a tensor, a tuple of tensors, "
                        "a dict with 'out' or an object with a .logits tensor")
    out = outputs["out"]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"{who}'s output must hold B×C×H×W logits, got {shape}")
    for key in ("out", "aux"):
        if isinstance(outputs.get(key), torch.Tensor) and outputs[key].dim() == 4:
            outputs[key] = _resized(outputs[key], size, align_corners)
    return outputs


class SegmentationOutputs(nn.Module):
    """Wraps ``model`` so its ``forward(x)`` returns ``model_outputs(model(x), x's size)``.

    The wrapped model is the sub-module ``model``: its state dict keys gain the prefix ``model.``.
    """

    def __init__(self, model: nn.Module, align_corners: bool = False) -> None:
        super().__init__()
        self.model = model
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return model_outputs(self.model(x), x.shape[-2:], align_corners=self.align_corners,
                             who=type(self.model).__name__)
