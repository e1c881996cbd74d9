"""Af-DCD: masked feature mimicking plus an omni-contrastive loss over channel groups and patches."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from segkd.distill.base import register_method
from segkd.distill.functional import check_choice, full_precision, resize_like
from segkd.distill.options import check_temperature
from segkd.distill.paired import PairedTapMethod


def _tokens(x: torch.Tensor, groups: int, patch: int) -> torch.Tensor:
    """B×C×H×W -> (B·P)×(N·M)×(C/M): per patch of N = patch² positions, one token per
    (position n, channel group m) at index n·M + m; edges beyond whole patches are dropped."""
    b, c, h, w = x.shape
    hp, wp = h // patch, w // patch
    if hp == 0 or wp == 0:
        raise ValueError(f"afdcd: the {h}×{w} map (after pooling) is smaller than one {patch}×{patch} patch; "
                         "lower pool or patch, or use larger crops")
    x = x[:, :, : hp * patch, : wp * patch].reshape(b, groups, c // groups, hp, patch, wp, patch)
    return x.permute(0, 3, 5, 4, 6, 1, 2).reshape(b * hp * wp, patch * patch * groups, c // groups)


def omni_contrastive_loss(student: torch.Tensor, teacher: torch.Tensor, groups: int, patch: int,
                          tau: float) -> torch.Tensor:
    """InfoNCE inside each patch, similarity = −L1 distance between a student token and the teacher's.

    The positive of token (n, m) is the teacher's token (n, m); its negatives are the teacher's
    tokens of every other channel group, at any position of the patch. Returns the sum over
    groups of the cross-entropy, averaged over images and positions.
    """
    s, t = _tokens(student, groups, patch), _tokens(teacher, groups, patch)
    similarity = -torch.cdist(s, t, p=1) / tau  # R×K×K
    k = similarity.shape[-1]
    group = torch.arange(k, device=similarity.device) % groups
    same = torch.eye(k, dtype=torch.bool, device=similarity.device)
    allowed = same | (group[:, None] != group[None, :])
    log_norm = torch.logsumexp(similarity.masked_fill(~allowed, float("-inf")), dim=-1)
    rows = log_norm - similarity.diagonal(dim1=-2, dim2=-1)  # R×K cross-entropies
    return rows.sum() / (rows.numel() / groups)


class EnhancedProjector(nn.Module):
    """Two conv-ReLU blocks whose outputs, each through its own 3×3 conv, are averaged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = lambda: nn.Conv2d(channels, channels, 3, padding=1)  # noqa: E731
        self.block1, self.block2 = nn.Sequential(conv(), nn.ReLU()), nn.Sequential(conv(), nn.ReLU())
        self.adapt1, self.adapt2 = conv(), conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.block1(x)
        return (self.adapt1(x1) + self.adapt2(self.block2(x1))) / 2


@register_method("afdcd")
class AfDCD(PairedTapMethod):
    """Af-DCD (Fan et al., NeurIPS 2023), its two feature terms on the last backbone stage.

    The student feature is mapped to the teacher's channels (1×1 conv when they differ), a random
    ``mask_ratio`` of its positions is zeroed, and a projector (3×3 conv, ReLU, 3×3 conv; or the
    "enhanced" two-branch one) predicts the teacher feature from what is left:

    - ``fd = Σ (proj − t)² / B`` (masked feature mimicking);
    - ``ctr``: after a ``pool``×``pool`` max-pool of both maps, :func:`omni_contrastive_loss`
      over ``patch``×``patch`` patches and ``groups`` channel groups at ``temperature`` τ.

    Defaults are the authors' Cityscapes DeepLabV3-R101 → R18 script (fd 2e-6, ctr 5e-3,
    enhanced projector, random masks: its ``--rand_mask False`` is read as True by argparse); the
    code's own argparse defaults are fd 4e-5, ctr 1e-3 and the plain projector. The paper's
    recipe adds pixel-wise logits KD (T 1, weight 1): list ``logits_kd`` beside it, and it clips
    the projector's gradient norm at 15, which segkd does not. Maps whose pooled size is not a
    multiple of ``patch`` lose the edge rows / columns in ``ctr``.

    Input: ``student[at]`` B×Cs×H×W, ``teacher[at]`` B×Ct×H×W (Ct divisible by ``groups``).
    Returns ``{"fd": fd_weight · fd, "ctr": ctr_weight · ctr}``.
    """

    paper = ("Fan et al., Augmentation-free Dense Contrastive Knowledge Distillation for "
             "Efficient Semantic Segmentation, NeurIPS 2023")
    task = "semantic"
    terms: ClassVar[tuple[str, ...]] = ("fd", "ctr")
    tapped = "afdcd_feat"
    renamed_options = {"tau": "temperature"}

    def __init__(self, fd_weight: float = 2e-6, ctr_weight: float = 5e-3, temperature: float = 0.07,
                 groups: int = 16, patch: int = 4, pool: int = 4, mask_ratio: float = 0.75,
                 projector: str = "enhanced", at: str = "stage4") -> None:
        super().__init__(at)
        check_choice("projector", projector, ("plain", "enhanced"))
        if groups < 1 or patch < 1 or pool < 0 or not 0 <= mask_ratio <= 1:
            raise ValueError(
                f"afdcd: need groups >= 1, patch >= 1, pool >= 0, 0 <= mask_ratio <= 1; got "
                f"groups={groups}, patch={patch}, pool={pool}, mask_ratio={mask_ratio}"
            )
        self.fd_weight, self.ctr_weight = fd_weight, ctr_weight
        self.temperature = check_temperature(temperature, self.name)
        self.groups, self.patch, self.pool, self.mask_ratio = groups, patch, pool, mask_ratio
        self.projector_kind = projector
        self.align: nn.Module = nn.Identity()
        self.projector: nn.Module | None = None

    def setup_pair(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]) -> None:
        cs, ct = student_shapes[self.key][1], teacher_shapes[self.key][1]
        if ct % self.groups:
            raise ValueError(f"afdcd: groups={self.groups} must divide the teacher's {ct} channels")
        if cs != ct:
            self.align = nn.Conv2d(cs, ct, 1)
        if self.projector_kind == "enhanced":
            self.projector = EnhancedProjector(ct)
        else:
            self.projector = nn.Sequential(nn.Conv2d(ct, ct, 3, padding=1), nn.ReLU(),
                                           nn.Conv2d(ct, ct, 3, padding=1))

    def pair_losses(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                    batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert self.projector is not None, "afdcd: setup() builds the projector before the first step"
        source, target = self.mapped_pair(student, teacher)
        with full_precision(target):
            target = target.float()
            source = resize_like(self.align(source.float()), target)
            b, _, h, w = source.shape
            keep = (torch.rand(b, 1, h, w, device=source.device) >= self.mask_ratio).to(source.dtype)
            predicted = self.projector(source * keep)
            fd = (predicted - target).pow(2).sum() / b
            if self.pool > 0:
                predicted, target = F.max_pool2d(predicted, self.pool), F.max_pool2d(target, self.pool)
            ctr = omni_contrastive_loss(predicted, target, self.groups, self.patch, self.temperature)
        return {"fd": self.fd_weight * fd, "ctr": self.ctr_weight * ctr}
