"""Named full recipes: a paper's whole distillation loss as one method built from segkd's methods."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from segkd.distill import ifvd, logits_kd, skd  # noqa: F401  (registers the parts)
from segkd.distill.base import METHODS, DistillMethod, build_method, register_method


class Recipe(DistillMethod):
    """Several methods run as one: taps, learnable parts, progress and terms are the parts'.

    Subclasses build ``parts`` (method specs) from their options and list what they include
    in ``includes`` (shown by ``segkd methods``). The data's ignore label reaches every part.
    """

    task = "semantic"
    includes: ClassVar[str] = ""

    def __init__(self, parts: list[dict[str, Any]]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(build_method(spec) for spec in parts)

    @property
    def student_taps(self) -> dict[str, str]:  # type: ignore[override]
        return {k: v for part in self.parts for k, v in part.student_taps.items()}

    @property
    def teacher_taps(self) -> dict[str, str]:  # type: ignore[override]
        return {k: v for part in self.parts for k, v in part.teacher_taps.items()}

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for part in self.parts:
            part.bind(student, teacher)

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        for part in self.parts:
            part.setup(student_shapes, teacher_shapes)

    def set_progress(self, progress: float) -> None:
        for part in self.parts:
            part.set_progress(progress)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = [part.param_groups() for part in self.parts]
        return {key: [p for g in groups for p in g.get(key, [])] for key in ("backbone", "head")}

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            part.ignore_index = self.ignore_index
            terms.update(part(student, teacher, batch))
        return terms


def _terms(*names: str, drop: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: v for n in names for k, v in METHODS.get(n).terms.items() if k not in drop}


@register_method("skd_full")
class SKDFull(Recipe):
    """SKD's whole loss (Liu et al., CVPR 2019; irfanICMLL/structure_knowledge_distillation):
    pair-wise (``skd``, weight 1) + pixel-wise (``logits_kd`` at T 1, ``kd_weight`` 10) +
    holistic (the self-trained Wasserstein critic, λ_d 0.1). The task loss is the trainer's.

    The reference's pixel-wise term sums the soft cross-entropy over the batch and divides by
    h·w only (B × the per-pixel mean used here) and does not mask the ignore label
    (``mask_ignore=False`` does as it does).
    """

    paper = "Liu et al., Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019"
    includes = "skd (pair-wise 1, holistic 0.1, own critic) + logits_kd (T 1, weight 10)"
    terms = _terms("logits_kd", "skd")

    def __init__(self, kd_weight: float = 10.0, pairwise_weight: float = 1.0, adv_weight: float = 0.1,
                 at: str = "head", mask_ignore: bool = True) -> None:
        super().__init__([
            {"name": "logits_kd", "temperature": 1.0, "weight": kd_weight, "at": "logits", "mask_ignore": mask_ignore},
            {"name": "skd", "at": at, "weight": pairwise_weight, "adv_weight": adv_weight},
        ])


@register_method("ifvd_full")
class IFVDFull(Recipe):
    """IFVD's whole loss (Wang et al., ECCV 2020; YukangWang/IFVD, ``networks/kd_model.py``):
    the IFV term (``ifvd``, 200) + pixel-wise KD (``logits_kd`` at T 1, ``kd_weight`` 10) + the
    adversarial term of SKD's holistic critic (student weight ``adv_weight`` 0.001, critic loss
    0.1, critic trained by Adam at 4e-4, betas (0.9, 0.99), no weight decay, as the reference).

    The reference's KD is ``nn.KLDivLoss()`` with its default mean over N·C·h·w elements, i.e.
    the per-pixel KL divided by the class count, unmasked; here the per-pixel mean at weight 10
    (the paper's), the ignore label masked unless ``mask_ignore=False``.
    """

    paper = "Wang et al., Intra-class Feature Variation Distillation for Semantic Segmentation, ECCV 2020"
    includes = "ifvd (200) + logits_kd (T 1, weight 10) + skd holistic only (0.001, Adam critic)"
    terms = _terms("ifvd", "logits_kd", "skd", drop=("skd_pairwise",))

    def __init__(self, ifvd_weight: float = 200.0, kd_weight: float = 10.0, adv_weight: float = 0.001,
                 at: str = "head", mask_ignore: bool = True) -> None:
        super().__init__([
            {"name": "ifvd", "at": at, "weight": ifvd_weight},
            {"name": "logits_kd", "temperature": 1.0, "weight": kd_weight, "at": "logits", "mask_ignore": mask_ignore},
            {"name": "skd", "weight": 0.0, "adv_weight": adv_weight, "d_loss_weight": 0.1, "d_optimizer": "adam",
             "d_weight_decay": 0.0},
        ])
