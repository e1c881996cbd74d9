"""BYOT: Be Your Own Teacher (Zhang et al., ICCV 2019), for binary object segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.byot_adapters import adaptation
from segkd.distill.functional import check_choice, kl_binary, require_shapes, resize_like
from segkd.distill.heads import PredictionHead
from segkd.distill.options import check_temperature
from segkd.models.losses import structure_loss


@register_method("byot")
class BYOT(DistillMethod):
    """Heads on shallow stages learn from the network's own final prediction and deepest feature.

    Each shallow stage ``i`` gets an adaptation (bottleneck blocks to the deepest tap's channels
    and stride) giving ``F_i``, and a prediction head on ``F_i`` (full-resolution logits ``z_i``)::

        L = (1 − α)·Σ_i S(z_i, mask) + α·T²·Σ_i KL(σ(out/T) ‖ σ(z_i/T)) + λ·Σ_i ‖F_i − F_deep‖²

    S is the structure loss (the binary counterpart of the paper's cross-entropy). The softened
    prediction is a per-pixel Bernoulli ``σ(z/T)``; ``out`` (the student's final logits) and
    ``F_deep`` (the ``deepest`` tap) are detached targets. The paper scales the deepest head's own
    loss by (1 − α) too (α: ``kd_share``): set the config's ``loss.main_weight`` to ``1 − kd_share``
    to follow it.

    Defaults follow the reimplementation that has the hint term (luanyunteng/pytorch-be-your-
    own-teacher, ``train.py``, ``models/resnet.py``: α 0.1, T 3, λ 1e-6); the authors' own code
    (ArchipLab-LinfengZhang/pytorch-self-distillation-final, ``train.py``) has no hint term and
    uses α 0.3. The hint is taken there on globally average-pooled features (``hint_on=
    "pooled"``): ``‖·‖²`` over the C channels of ``pool(F_i)`` and ``pool(F_deep)``, counted only
    where either is positive, summed over the batch too, as that code. ``hint_on="map"`` takes it
    on the full maps (unmasked, summed over C×h×w, mean over the batch, ``F_i`` resized to
    ``F_deep``); λ is then about h·w/B times too large: scale it down by that.

    Adaptation: the reference gives each shallow section one bottleneck whose middle conv has
    kernel = stride = the stride ratio to the deepest section; segkd chains stride-2
    bottlenecks (one per halving), which works for any stride ratio and keeps 3×3 kernels.
    The reference's KD term is the soft cross-entropy −Σ p_t log p_s: the KL used here has its
    gradient (they differ by the target's entropy, a constant).

    Returns ``{"aux_sup", "kd", "hint"}``, already weighted.
    """

    paper = (
        "Zhang et al., Be Your Own Teacher: Improve the Performance of Convolutional Neural "
        "Networks via Self Distillation, ICCV 2019"
    )
    kind = "self"
    task = "binary"
    needs_teacher = False
    renamed_options = {"alpha": "kd_share"}
    terms = {
        "aux_sup": "(1 − kd_share) · Σ_i structure loss of shallow head i",
        "kd": "kd_share · T² · Σ_i Bernoulli KL(out detached ‖ head i)",
        "hint": "hint_weight · Σ_i ‖pool(F_i) − pool(F_deepest) (detached)‖² where either > 0, summed over "
                "C and the batch (hint_on='map': over C×h×w, mean over the batch)",
    }

    def __init__(
        self,
        stages: Sequence[str] = ("stage1", "stage2", "stage3"),
        deepest: str = "stage4",
        temperature: float = 3.0,
        kd_share: float = 0.1,
        hint_weight: float = 1e-6,
        head_channels: int = 64,
        hint_on: str = "pooled",
    ) -> None:
        super().__init__()
        check_choice("hint_on", hint_on, ("pooled", "map"))
        if not stages or deepest in stages:
            raise ValueError(f"byot: 'stages' must be non-empty and exclude deepest '{deepest}'")
        if not 0.0 <= kd_share <= 1.0:
            raise ValueError(f"method 'byot': option 'kd_share' must be in [0, 1], got {kd_share}")
        self.stages = tuple(stages)
        self.deepest = deepest
        self.temperature = check_temperature(temperature, self.name)
        self.kd_share = kd_share
        self.hint_weight = hint_weight
        self.head_channels = head_channels
        self.hint_on = hint_on
        self.student_taps = {name: name for name in (*self.stages, deepest)}
        self.adapters = nn.ModuleList()
        self.heads = nn.ModuleList()

    def setup(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        deepest = student_shapes[self.deepest]
        for stage in self.stages:
            self.adapters.append(adaptation(student_shapes[stage], deepest))
            self.heads.append(PredictionHead(deepest[1], 1, self.head_channels))

    def branch_outputs(
        self, student: Mapping[str, torch.Tensor], size: torch.Size | tuple[int, int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(F_i, z_i)`` per shallow stage: adapted feature B×C_deep×h×w, logits B×1×H×W."""
        outputs = []
        for stage, adapter, head in zip(self.stages, self.adapters, self.heads):
            feature = adapter(student[stage])
            outputs.append((feature, head.forward_to(feature, size)))
        return outputs

    def head_logits(self, student: Mapping[str, torch.Tensor],
                    size: torch.Size | tuple[int, int]) -> dict[str, torch.Tensor]:
        return {f"head@{stage}": z for stage, (_, z) in zip(self.stages, self.branch_outputs(student, size))}

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = student["out"]
        target_logits = out.detach()
        target_feature = student[self.deepest].detach().float()
        sup, kd, hint = [], [], []
        for feature, logits in self.branch_outputs(student, out.shape[-2:]):
            sup.append(structure_loss(logits, batch["mask"]))
            kd.append(kl_binary(logits, target_logits, self.temperature))
            hint.append(self.hint(feature.float(), target_feature))
        return {
            "aux_sup": (1 - self.kd_share) * torch.stack(sup).sum(),
            "kd": self.kd_share * torch.stack(kd).sum(),
            "hint": self.hint_weight * torch.stack(hint).sum(),
        }

    def hint(self, feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """‖F_i − F_deep‖² of one head (see the class doc for ``hint_on``)."""
        if self.hint_on == "map":
            return (resize_like(feature, target) - target).pow(2).sum() / feature.shape[0]
        pooled, pooled_target = feature.mean(dim=(2, 3)), target.mean(dim=(2, 3))
        either_positive = (pooled > 0) | (pooled_target > 0)
        return ((pooled - pooled_target).pow(2) * either_positive).sum()
