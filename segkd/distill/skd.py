"""Structured KD: pixel-pair affinities (pair-wise) and score maps (holistic) follow the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.discriminator import ScoreMapDiscriminator, frozen, gradient_penalty, scale_gradient
from segkd.distill.functional import full_precision, resize_like

TAPPED = "skd_input"
SCORES = "skd_scores"


@register_method("skd")
class StructuredKD(DistillMethod):
    """Pair-wise and holistic distillation of Liu et al., "Structured Knowledge Distillation for
    Semantic Segmentation", CVPR 2019; defaults are the authors' code throughout.

    Pair-wise (``skd_pairwise``): the feature map ``at`` is max-pooled into a grid of nodes
    (kernel ``pool_scale`` × its size, ceil mode: the authors' ``--pool-scale 0.5`` gives a 2×2
    grid; ``pool_size`` = k, when set, pools k×k instead, as the CIRKD benchmark's 2), each
    node's channel vector is L2-normalised and ``a_ij`` is the cosine similarity of nodes i, j;
    the loss is the mean over images and node pairs of ``(a_ij^s − a_ij^t)²``, weight 1
    (``--lambda-pa``). The
    student map is resized to the teacher's H×W when they differ. (The authors' code stops the
    gradient through the vector norms; here it flows through the normalisation.)

    Holistic (``skd_adv``, ``skd_adv_d``): a Wasserstein critic D (:class:`ScoreMapDiscriminator`)
    scores class-score maps (the classifier's logits, feature point ``logits``). The student
    term is ``−λ_d · mean D(s)``; D's term is ``λ_d · (mean D(s) − mean D(t) + λ_gp · GP)`` with
    the WGAN-GP penalty, λ_d = 0.1, λ_gp = 10 (``--lambda-d``, ``--lambda-gp``).
    How D trains without the trainer knowing: the reference alternates a student step (D's
    gradient from it discarded) and a D step on the detached student scores, both from the same
    forward pass. Here both are one backward: the student term runs D with its parameters
    frozen (no gradient into D) and D's term sees only detached scores (no gradient into the
    student), so the trainer's single step applies exactly the reference's two gradients. The
    reference trains D with its own SGD at 4e-4 against the student's 1e-2; here D sits in the
    trainer's SGD at the head's LR, its gradient scaled by ``d_lr_scale`` (0.004 × the default
    10× head LR = 0.04 × base, the reference's ratio; weight decay is the trainer's). The logged
    ``skd_adv_d`` is D's true loss, so the logged total includes it. ``adv_weight=0`` drops the
    holistic term and D. SKD's pixel-wise term is ``logits_kd`` (T 1; the authors weight it 10).

    Returns ``{"skd_pairwise", "skd_adv", "skd_adv_d"}`` (the last two when ``adv_weight`` > 0).
    """

    paper = "Liu et al., Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019"
    terms = {
        "skd_pairwise": "squared difference of pooled-node cosine affinities",
        "skd_adv": "Wasserstein adversarial term of the student's score maps (holistic)",
        "skd_adv_d": "the critic's own WGAN-GP loss (trains the discriminator only)",
    }

    def __init__(
        self,
        at: str = "head",
        pool_scale: float | None = 0.5,
        pool_size: int | None = None,
        weight: float = 1.0,
        adv_weight: float = 0.1,
        gp_weight: float = 10.0,
        d_lr_scale: float = 0.004,
        d_channels: int = 64,
    ) -> None:
        super().__init__()
        if pool_size is None and pool_scale is None:
            raise ValueError("skd: set 'pool_scale' (the authors' 0.5) or 'pool_size' (e.g. 2)")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"option 'pool_size' must be >= 1, got {pool_size}")
        if pool_scale is not None and not 0 < pool_scale <= 1:
            raise ValueError(f"option 'pool_scale' must be in (0, 1], got {pool_scale}")
        self.pool_scale, self.pool_size, self.weight = pool_scale, pool_size, weight
        self.adv_weight, self.gp_weight, self.d_lr_scale = adv_weight, gp_weight, d_lr_scale
        self.d_channels = d_channels
        self.discriminator: ScoreMapDiscriminator | None = None
        taps = {TAPPED: at, **({SCORES: "logits"} if adv_weight else {})}
        self.student_taps = dict(taps)
        self.teacher_taps = dict(taps)

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        if self.adv_weight:
            assert teacher_shapes is not None, "skd needs a teacher"
            shape = teacher_shapes[SCORES]
            self.discriminator = ScoreMapDiscriminator(int(shape[1]), tuple(shape[-2:]), self.d_channels)

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
            terms = {"skd_pairwise": self.weight * difference.pow(2).mean()}
            if self.discriminator is not None:
                terms.update(self.holistic(student[SCORES].float(), teacher[SCORES].detach().float()))
        return terms

    def holistic(self, s_scores: torch.Tensor, t_scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """The student's adversarial term and the critic's WGAN-GP loss (see the class doc)."""
        critic = self.discriminator
        assert critic is not None
        with frozen(critic):
            student_term = -critic(s_scores).mean()
        critic_loss = critic(s_scores.detach()).mean() - critic(t_scores).mean()
        if torch.is_grad_enabled():  # the penalty needs a gradient; evaluation passes skip it
            critic_loss = critic_loss + self.gp_weight * gradient_penalty(critic, t_scores, s_scores)
        return {"skd_adv": self.adv_weight * student_term,
                "skd_adv_d": scale_gradient(self.adv_weight * critic_loss, self.d_lr_scale)}

    def _kernel(self, size: tuple[int, int]) -> tuple[int, int]:
        if self.pool_size is not None:
            return self.pool_size, self.pool_size
        assert self.pool_scale is not None
        return max(1, int(size[0] * self.pool_scale)), max(1, int(size[1] * self.pool_scale))

    @staticmethod
    def affinity(feature: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
        """B×C×H×W features → B×N×N cosine similarities of the N pooled nodes."""
        nodes = F.max_pool2d(feature, kernel_size=kernel, stride=kernel, ceil_mode=True)
        nodes = F.normalize(nodes.flatten(2), dim=1)  # B×C×N, unit vectors per node
        return nodes.transpose(1, 2) @ nodes
