"""DHM's branches: copies of the student's later stages, then a decoder of the student's design."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.heads import PredictionHead
from segkd.distill.hooks import resolve_path

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


