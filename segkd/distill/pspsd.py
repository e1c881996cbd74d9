"""PSPSD: self-distillation via pyramid knowledge representation and transfer (binary masks)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import (
    check_choice,
    deep_supervision,
    kl_binary,
    mutual_kl_binary,
    require_shapes,
    resize_like,
)
from segkd.distill.options import check_temperature
from segkd.distill.pyramids import PyramidBranches

PYRAMIDS = ("ppm", "aspp")
PATHS = ("top_down", "consistency")


@register_method("pspsd")
class PSPSD(DistillMethod):
    """Pyramid representation branches teach the inference network through a synergy loss.

    Only the paper's abstract is public, so this is a reconstruction from it and from its
    precursor (Wang et al. 2022, self-distillation with an atrous spatial pyramid). Choices:

    - Inference network: the student, untouched; it is read only through taps.
    - Auxiliary network (training only, :class:`~segkd.distill.pyramids.PyramidBranches`): one
      pyramid branch per tap in ``levels`` (shallow → deep): PSPNet's pyramid pooling between a
      reduction to ``width`` and a merge (``pyramid="ppm"``, ``bins``) or DeepLab-v3's ASPP
      (``pyramid="aspp"``, ``rates``). Both pool to 1×1 before a BN: train with batches ≥ 2.
      Branches are fused top-down like an FPN: the deeper fused map is upsampled (bilinear),
      added, and merged by a 3×3 conv. Each branch predicts B×1×H×W logits (PredictionHead,
      bilinear upsampling) supervised by the mask with the structure loss, summed over
      branches as in deep supervision (``aux_sup``). Gradients of the auxiliary network reach
      the student's tapped features. The finest fused branch is the teacher.
    - Synergy loss, softened predictions = per-pixel Bernoulli σ(z/T), KL by ``kl_binary``
      (× T²), targets detached:
        * ``top_down``: a chain deepest branch → … → finest branch → ``out``; mean of the
          KL(target ‖ learner) of its links. ``feature``: the inference network's features
          (``transfer``, one tap per level, e.g. ``fused1..4`` or ``reduced1..4``; empty = off)
          learn the detached fused pyramid feature of the same level by MSE, after a 1×1 conv
          when widths differ (target resized bilinearly to the student's size); mean over
          levels. Both belong to the top-down path.
        * ``consistency``: every pair of branch predictions and ``out`` agree: symmetric KL
          with detached targets, averaged over pairs.
    - Defaults (T = 1, every weight 1) are choices: the paper's values are not public.

    Returns ``{"aux_sup", "top_down", "feature", "consistency"}`` (only the enabled ones), weighted.
    """

    paper = ("Zheng et al., Self-distillation object segmentation via pyramid knowledge representation and "
             "transfer, Multimedia Systems 2023")
    kind = "self"
    task = "binary"
    needs_teacher = False
    renamed_options = {"w_aux_sup": "aux_sup_weight", "w_top_down": "top_down_weight",
                       "w_consistency": "consistency_weight", "w_feature": "feature_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · Σ structure loss of each pyramid branch",
        "top_down": "top_down_weight · mean Bernoulli KL along deepest branch → … → finest → out",
        "feature": "feature_weight · mean MSE(transfer features, fused pyramid features detached)",
        "consistency": "consistency_weight · mean symmetric KL over pairs of branches and out",
    }

    def __init__(self, levels: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
                 transfer: Sequence[str] = ("fused1", "fused2", "fused3", "fused4"), pyramid: str = "ppm",
                 bins: Sequence[int] = (1, 2, 3, 6), rates: Sequence[int] = (1, 6, 12, 18), width: int = 64,
                 temperature: float = 1.0, paths: Sequence[str] = PATHS, aux_sup_weight: float = 1.0,
                 top_down_weight: float = 1.0, consistency_weight: float = 1.0, feature_weight: float = 1.0) -> None:
        super().__init__()
        check_choice("pyramid", pyramid, PYRAMIDS)
        for path in paths:
            check_choice("paths", path, PATHS)
        if not levels:
            raise ValueError("option 'levels' must name at least one tap")
        if transfer and len(transfer) != len(levels):
            raise ValueError(f"option 'transfer' must name one tap per level ({len(levels)}: {list(levels)}) "
                             f"or be empty, got {list(transfer)}")
        for option, values in (("bins", bins), ("rates", rates)):
            if not values or any(int(v) < 1 for v in values):
                raise ValueError(f"option '{option}' must be positive integers, got {values!r}")
        if width < 1:
            raise ValueError(f"option 'width' must be a positive integer, got {width!r}")
        self.levels, self.transfer = tuple(levels), tuple(transfer)
        self.pyramid, self.bins, self.rates = pyramid, tuple(bins), tuple(rates)
        self.width, self.paths = width, tuple(paths)
        self.temperature = check_temperature(temperature, self.name)
        self.aux_sup_weight, self.top_down_weight = aux_sup_weight, top_down_weight
        self.consistency_weight, self.feature_weight = consistency_weight, feature_weight
        self.student_taps = {name: name for name in (*self.levels, *self.transfer)}

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        require_shapes(student_shapes, self.student_taps, self.name)
        self.branches = PyramidBranches([student_shapes[n][1] for n in self.levels], self.pyramid, self.bins,
                                        self.rates, self.width)
        self.transfer_maps = nn.ModuleList(
            nn.Identity() if student_shapes[n][1] == self.width
            else nn.Conv2d(student_shapes[n][1], self.width, 1)
            for n in self.transfer
        )

    def head_logits(self, student: Mapping[str, torch.Tensor],
                    size: torch.Size | tuple[int, int]) -> dict[str, torch.Tensor]:
        _, logits = self.branches([student[n] for n in self.levels], size)
        return {f"branch@{level}": z for level, z in zip(self.levels, logits, strict=True)}

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``student``: ``"out"`` B×1×H×W and the taps; ``batch["mask"]`` B×1×H×W in {0, 1}."""
        out = student["out"]
        fused, logits = self.branches([student[n] for n in self.levels], out.shape[-2:])
        supervision = deep_supervision(logits, batch["mask"])
        losses = {"aux_sup": self.aux_sup_weight * supervision}
        if "top_down" in self.paths:
            losses["top_down"] = self.top_down_weight * self.top_down(logits, out)
            if self.transfer:
                losses["feature"] = self.feature_weight * self.feature_transfer(student, fused)
        if "consistency" in self.paths:
            predictions = [*logits, out]
            pairs = len(predictions) * (len(predictions) - 1)
            # the helper sums both directions of every pair: divide by the ordered pair count
            losses["consistency"] = self.consistency_weight * mutual_kl_binary(predictions, self.temperature) / pairs
        return losses

    def top_down(self, logits: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
        """Mean KL along deepest branch → … → finest branch → ``out`` (each target detached)."""
        learners = [*logits[:-1], out]
        targets = [*logits[1:], logits[0]]
        links = zip(learners, targets, strict=True)
        return torch.stack([kl_binary(s, t.detach(), self.temperature) for s, t in links]).mean()

    def feature_transfer(self, student: Mapping[str, torch.Tensor], fused: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over levels of MSE(map(student feature), fused pyramid feature detached)."""
        terms = []
        for name, mapping, target in zip(self.transfer, self.transfer_maps, fused, strict=True):
            mapped = mapping(student[name]).float()
            terms.append(F.mse_loss(mapped, resize_like(target.detach().float(), mapped)))
        return torch.stack(terms).mean()
