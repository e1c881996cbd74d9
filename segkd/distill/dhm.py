"""DHM: Dynamic Hierarchical Mimicking (Li & Chen, CVPR 2020), for binary object segmentation."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import deep_supervision, mutual_kl_binary, require_shapes
from segkd.distill.heads import PredictionHead
from segkd.distill.hooks import resolve_path


def hookless_copy(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` with its forward hooks dropped.

    The student's stages carry the trainer's feature taps; a copied hook would still write into
    the student's tap store whenever the branch runs.
    """
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        for hooks in (sub._forward_hooks, sub._forward_pre_hooks, sub._forward_hooks_with_kwargs,
                      sub._forward_hooks_always_called, sub._forward_pre_hooks_with_kwargs):
            hooks.clear()
    return clone


def modules_after(model: nn.Module, fork: str, last: str) -> list[nn.Module]:
    """The modules that run after module ``fork`` up to and including module ``last``.

    Both must be children of one container that runs its children in order (ResNet's
    ``layer1..4``; timm EfficientNet's ``blocks.0..6``, where the feature maps come from blocks
    2, 4 and 6 and blocks 3 and 5 run between them).
    """
    fork_parent, _, fork_name = fork.rpartition(".")
    last_parent, _, last_name = last.rpartition(".")
    if fork_parent != last_parent:
        raise ValueError(f"dhm: stages '{fork}' and '{last}' are not children of one container; "
                         "a branch can only replicate consecutive children")
    container = model.get_submodule(fork_parent) if fork_parent else model
    children = list(container.named_children())
    names = [name for name, _ in children]
    start, stop = names.index(fork_name), names.index(last_name)
    if stop <= start:
        raise ValueError(f"dhm: stage '{last}' does not come after '{fork}'")
    return [module for _, module in children[start + 1: stop + 1]]


@register_method("dhm")
class DHM(DistillMethod):
    """Side branches that replicate the later stages, all heads mimicking one another.

    A branch forks at each ``branch_from`` stage and runs fresh copies of every later module up
    to the last of ``stages`` (taken from the student in :meth:`bind`, so they start from its
    current weights)
    followed by a prediction head (full-resolution logits). With the student's ``out`` as one
    more head::

        L = sup_weight·Σ_b S(z_b, mask) + α·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    S is the structure loss (the binary counterpart of cross-entropy). The softened prediction is
    a per-pixel Bernoulli ``σ(z/T)``; the pairwise sum runs over ordered pairs of all heads
    (branches and ``out``), with the target ``z_j`` detached, so every pair mimics both ways.
    The student's own structure loss is added by the trainer.

    Returns ``{"aux_sup", "mimic"}``, already weighted.
    """

    paper = (
        "Li & Chen, Dynamic Hierarchical Mimicking Towards Consistent Optimization Objectives, "
        "CVPR 2020"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
        branch_from: Sequence[str] = ("stage2", "stage3"),
        temperature: float = 1.0,
        alpha: float = 1.0,
        sup_weight: float = 1.0,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        late = [s for s in branch_from if s not in stages[:-1]]
        if not branch_from or late:
            raise ValueError(
                f"dhm: 'branch_from' must name stages before the last of {list(stages)}; "
                f"got {list(branch_from)}"
            )
        if temperature <= 0:
            raise ValueError(f"dhm: 'temperature' must be > 0, got {temperature}")
        self.stages = tuple(stages)
        self.branch_from = tuple(branch_from)
        self.temperature = temperature
        self.alpha = alpha
        self.sup_weight = sup_weight
        self.head_channels = head_channels
        self.student_taps = {name: name for name in (*self.branch_from, self.stages[-1])}
        self.branches = nn.ModuleList()
        self.heads = nn.ModuleList()

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Copy the stages after each fork point from ``student`` (never kept itself)."""
        modules = dict(student.named_modules())
        paths = [resolve_path(student, stage) for stage in self.stages]
        missing = [p for p in paths if p not in modules]
        if missing:
            points = sorted(getattr(student, "feature_points", {}))
            raise KeyError(
                f"dhm: {type(student).__name__} has no module(s) {missing} for 'stages' "
                f"{list(self.stages)}; its feature points: {points}"
            )
        self.branches = nn.ModuleList(
            nn.Sequential(*map(hookless_copy, modules_after(student, paths[self.stages.index(s)], paths[-1])))
            for s in self.branch_from
        )

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        channels = student_shapes[self.stages[-1]][1]
        self.heads = nn.ModuleList(
            PredictionHead(channels, 1, self.head_channels) for _ in self.branch_from
        )

    def branch_logits(
        self, student: Mapping[str, torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> list[torch.Tensor]:
        """Logits B×1×H×W of each branch, in ``branch_from`` order."""
        if len(self.branches) != len(self.branch_from):
            raise RuntimeError("dhm: call bind(student, teacher) before using the method")
        return [
            head.forward_to(branch(student[stage]), size)
            for stage, branch, head in zip(self.branch_from, self.branches, self.heads)
        ]

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = student["out"]
        logits = self.branch_logits(student, out.shape[-2:])
        sup = deep_supervision(logits, batch["mask"])
        mimic = mutual_kl_binary([out, *logits], self.temperature)
        return {"aux_sup": self.sup_weight * sup, "mimic": self.alpha * mimic}
