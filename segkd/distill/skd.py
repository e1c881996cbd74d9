"""Structured KD, pair-wise term: the student's pixel-to-pixel affinities follow the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import full_precision, resize_like

TAPPED = "skd_input"


@register_method("skd")
class StructuredPairwiseKD(DistillMethod):
    """Pair-wise distillation of Liu et al., "Structured Knowledge Distillation for Semantic
    Segmentation", CVPR 2019.

    The feature map is max-pooled into a coarse grid of nodes, each node's channel vector is
    L2-normalised, and the affinity of nodes i, j is their cosine similarity
    ``a_ij = f_iᵀ f_j / (‖f_i‖ ‖f_j‖)``. The loss is the mean over images and node pairs of
    ``(a_ij^s − a_ij^t)²``, i.e. ``1/(w'h')² Σ_ij (a_ij^s − a_ij^t)²`` averaged over the batch.
    Affinities do not depend on the channel count, so no mapping layer is needed; the student
    map is resized to the teacher's H×W when they differ. (The authors' code stops the gradient
    through the vector norms; here it flows through the normalisation.)

    Node size: the authors' code pools with a kernel of ``pool_scale`` × the feature size
    (``--pool-scale 0.5``: a 2×2 grid of nodes); later benchmarks (e.g. the CIRKD code base)
    pool with a fixed 2×2 kernel, a grid of (H/2)×(W/2) nodes. Default here: ``pool_size=2``;
    ``pool_scale=0.5`` reproduces the authors' setting. Pooling uses ceil mode, so odd sizes keep
    their last row/column. Weight 1.0 is the authors' ``--lambda-pa``.

    Input: ``student[at]`` / ``teacher[at]`` B×C×H×W (default the 512-channel ``head``).
    Returns ``{"skd_pairwise": weight · loss}``.
    """

    paper = "Liu et al., Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019"

    def __init__(
        self,
        at: str = "head",
        pool_size: int = 2,
        pool_scale: float | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"option 'pool_size' must be >= 1, got {pool_size}")
        if pool_scale is not None and not 0 < pool_scale <= 1:
            raise ValueError(f"option 'pool_scale' must be in (0, 1], got {pool_scale}")
        self.pool_size = pool_size
        self.pool_scale = pool_scale
        self.weight = weight
        self.student_taps = {TAPPED: at}
        self.teacher_taps = {TAPPED: at}

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, torch.Tensor]:
        assert teacher is not None, "skd needs a teacher"
        target = teacher[TAPPED].detach()
        with full_precision(target):
            source = resize_like(student[TAPPED].float(), target)
            kernel = self._kernel(tuple(target.shape[-2:]))
            difference = self.affinity(source, kernel) - self.affinity(target.float(), kernel)
            loss = difference.pow(2).mean()
        return {"skd_pairwise": self.weight * loss}

    def _kernel(self, size: tuple[int, int]) -> tuple[int, int]:
        if self.pool_scale is None:
            return self.pool_size, self.pool_size
        return max(1, int(size[0] * self.pool_scale)), max(1, int(size[1] * self.pool_scale))

    @staticmethod
    def affinity(feature: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
        """B×C×H×W features → B×N×N cosine similarities of the N pooled nodes."""
        nodes = F.max_pool2d(feature, kernel_size=kernel, stride=kernel, ceil_mode=True)
        nodes = F.normalize(nodes.flatten(2), dim=1)  # B×C×N, unit vectors per node
        return nodes.transpose(1, 2) @ nodes
