"""Intra-class feature variation distillation: how far each pixel lies from its class centre."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import register_method
from segkd.distill.functional import check_choice, full_precision, labels_at, resize_like
from segkd.distill.mapping import MAPPING_MODES
from segkd.distill.paired import PairedTapMethod


@register_method("ifvd")
class IntraClassFeatureVariationKD(PairedTapMethod):
    """IFVD (Wang et al., "Intra-class Feature Variation Distillation for Semantic Segmentation",
    ECCV 2020).

    For each image and each class present in its labels (resized to the feature size with
    nearest neighbour), the prototype is the mean feature of the class's pixels. The IFV map is
    the cosine similarity of every labelled pixel's feature with its own class prototype,
    computed for student and teacher; the loss is the squared difference of the two maps summed
    over labelled pixels (the data's ignore index skipped) and divided by:

    - ``mean_over="all"`` (default, the authors' code): every pixel, B·h·w. Their code keeps an
      ignored pixel's own feature as its "prototype", so its difference is 0 but it counts.
    - ``mean_over="labelled"``: the labelled pixels only (the term no longer shrinks with the
      share of ignored pixels).

    Weight 200 is the code's ``--lambda-ifv`` default.

    Cosine similarities do not depend on the channel count, so by default no mapping is built
    (the authors' code has none); ``mapping="auto"`` / ``"conv_bn"`` add a 1×1 conv + BN on the
    student side. The student map is resized to the teacher's H×W when they differ.

    Input: ``student[at]`` / ``teacher[at]`` B×C×h×w (default ``head``), ``batch["mask"]``
    B×H×W int64. Returns ``{"ifvd": weight · loss}``.
    """

    paper = (
        "Wang et al., Intra-class Feature Variation Distillation for Semantic Segmentation, "
        "ECCV 2020"
    )
    task = "semantic"
    terms = {"ifvd": "squared difference of each pixel's cosine to its class prototype"}
    tapped = "ifvd_input"

    def __init__(self, at: str = "head", weight: float = 200.0, mapping: str = "none", mean_over: str = "all") -> None:
        super().__init__(at)
        check_choice("mapping", mapping, MAPPING_MODES)
        check_choice("mean_over", mean_over, ("all", "labelled"))
        self.weight = weight
        self.mapping_mode = mapping
        self.mean_over = mean_over
        self.mapping: torch.nn.Module | None = None

    def setup_pair(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]) -> None:
        if self.mapping_mode != "none":
            self.mapping = self.pair_mapping(self.mapping_mode, student_shapes, teacher_shapes)

    def pair_losses(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                    batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        source, target = self.mapped_pair(student, teacher, self.mapping)
        with full_precision(source):
            source = resize_like(source.float(), target)
            labels = labels_at(batch["mask"], target.shape[-2:])
            valid = labels != self.ignore_index
            if not valid.any():
                return {"ifvd": source.sum() * 0.0}
            class_masks = _one_hot(labels, valid)
            difference = _ifv_map(source, class_masks) - _ifv_map(target.float(), class_masks)
            squared = difference[valid].pow(2)
            loss = squared.sum() / (valid.numel() if self.mean_over == "all" else squared.numel())
        return {"ifvd": self.weight * loss}


def _one_hot(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """B×h×w labels → B×K×h×w float one-hot, all zeros at ignored pixels."""
    num_classes = int(labels[valid].max()) + 1
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    one_hot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return one_hot * valid[:, None].float()


def _ifv_map(feature: torch.Tensor, class_masks: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pixel with its class prototype: B×C×h×w, B×K×h×w → B×h×w."""
    sums = torch.einsum("bkhw,bchw->bkc", class_masks, feature)
    counts = class_masks.sum(dim=(2, 3))[..., None]  # B×K×1
    prototypes = sums / counts.clamp_min(1.0)
    own_prototype = torch.einsum("bkhw,bkc->bchw", class_masks, prototypes)
    return F.cosine_similarity(feature, own_prototype, dim=1, eps=1e-8)
