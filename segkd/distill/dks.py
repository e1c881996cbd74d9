"""DKS: Deeply-supervised Knowledge Synergy (Sun et al., CVPR 2019), for binary segmentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import register_method
from segkd.distill.functional import deep_supervision, mutual_kl_binary
from segkd.distill.side_branches import FORKS, PAIRED_HEADS, STAGES, SideBranchMethod, SynergyBranch
from segkd.models.base import resize_to

SYNERGY_AT = ("input", "branches")  # where the heads are matched (see DKS)


@register_method("dks")
class DKS(SideBranchMethod):
    """Auxiliary branches of their own design on intermediate stages; every head is supervised
    and every pair of heads is matched ("knowledge synergy")::

        L = aux_sup_weight·Σ_b S(z_b, mask) + synergy_weight·Σ_{i≠j} KL(σ(z_j/T) ‖ σ(z_i/T))

    Branches, as the authors' code (sundw2014/DKS, ``wrn_DKS/resnet.py``): each ``branch_from``
    stage forks a branch of *fresh* residual blocks (:class:`~segkd.distill.side_branches.SynergyBranch`:
    ``blocks`` ResNet basic blocks per later stage, each stage's channels, stride 2 where the
    backbone halves the size) down to the deepest stage's resolution, then a prediction head
    (its classifier; here a 3×3 conv-BN-ReLU-1×1 conv, logits upsampled to the input size).
    Nothing is copied from the student (DHM, by contrast, replicates its later stages and
    decoder). The reference's branches use the backbone's group sizes (n, then n/2 blocks; the
    branch nearest the output twice as wide); one block per stage is segkd's lighter default.

    Loss, as ``wrn_DKS/main.py``: the task loss of every head at weight 1 (``out``'s is the
    trainer's) and the KL of every ordered pair of heads (branches and ``out``), target
    detached, at weight 1: every head teaches and learns from every other, ``out`` included.
    S is the structure loss (the binary counterpart of cross-entropy); the softened prediction
    is a per-pixel Bernoulli ``σ(z/T)`` (the reference: softmax at T 1).

    ``synergy_at``: where heads are matched. ``"input"`` (the default): every head's logits
    upsampled to the input size. ``"branches"``: at the branches' own resolution (the deepest
    stage's), ``out`` replaced by :func:`pool_logits` (its softened probabilities averaged over each
    cell), so the full-resolution output agrees with the coarse heads on each cell's mean instead of
    copying their blur. The reference classifies (one prediction per image), so it does not settle this.

    All branch parameters train at the head's LR (new layers). Returns ``{"aux_sup", "synergy"}``.
    """

    paper = "Sun et al., Deeply-supervised Knowledge Synergy, CVPR 2019"
    pair_term = "synergy"
    renamed_options = {"sup_weight": "aux_sup_weight"}
    terms = {
        "aux_sup": "aux_sup_weight · structure loss of each auxiliary branch",
        "synergy": f"synergy_weight · {PAIRED_HEADS}",
    }

    def __init__(self, stages: Sequence[str] = STAGES, branch_from: Sequence[str] = FORKS, blocks: int = 1,
                 head_channels: int = 64, temperature: float = 1.0, aux_sup_weight: float = 1.0,
                 synergy_weight: float = 1.0, synergy_at: str = "input") -> None:
        super().__init__(stages, branch_from, temperature, aux_sup_weight, synergy_weight)
        if blocks < 1:
            raise ValueError(f"dks: 'blocks' must be >= 1, got {blocks}")
        if synergy_at not in SYNERGY_AT:
            raise ValueError(f"dks: 'synergy_at' must be one of {list(SYNERGY_AT)}, got {synergy_at!r}")
        self.blocks, self.head_channels, self.synergy_at = blocks, head_channels, synergy_at

    def setup_branches(self, student_shapes: Mapping[str, torch.Size]) -> None:
        for fork in self.branch_from:
            shapes = [student_shapes[s] for s in self.stages[self.stages.index(fork):]]
            self.branches.append(SynergyBranch(shapes, self.blocks, self.head_channels))

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.synergy_at == "input":
            return super().forward(student, teacher, batch)
        out = student["out"]
        coarse = [branch.native(shared) for branch, shared in self.branch_inputs(student)]  # all at the deepest stage
        supervision = deep_supervision([resize_to(z, out.shape[-2:], align_corners=False) for z in coarse],
                                       batch["mask"])
        pooled = pool_logits(out, coarse[0].shape[-2:], self.temperature)
        pairs = mutual_kl_binary([pooled, *coarse], self.temperature)
        return {"aux_sup": self.aux_sup_weight * supervision, self.pair_term: self.pair_weight * pairs}


def pool_logits(logits: torch.Tensor, size: Sequence[int], temperature: float = 1.0) -> torch.Tensor:
    """Logits whose softened prediction σ(·/T) is the mean of σ(z/T) over each cell of ``size``:
    T·(log mean σ(z/T) − log mean σ(−z/T)). In float64, so that a confident cell (|z| of 10 or more,
    where float32 sums of probabilities near 1 round) keeps its value and its gradient."""
    z = logits.double() / temperature
    tiny = torch.finfo(torch.float64).tiny
    foreground = F.adaptive_avg_pool2d(torch.sigmoid(z), tuple(size)).clamp_min(tiny).log()
    background = F.adaptive_avg_pool2d(torch.sigmoid(-z), tuple(size)).clamp_min(tiny).log()
    return ((foreground - background) * temperature).to(logits.dtype)
