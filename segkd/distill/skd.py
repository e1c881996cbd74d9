"""Structured KD: pixel-pair affinities (pair-wise) and score maps (holistic) follow the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.critic import OPTIMIZERS, SelfTrainedCritic
from segkd.distill.discriminator import ScoreMapDiscriminator
from segkd.distill.functional import check_choice, full_precision, resize_like

TAPPED = "skd_input"
SCORES = "skd_scores"


@register_method("skd")
class StructuredKD(DistillMethod):
    """Pair-wise and holistic distillation of Liu et al., "Structured Knowledge Distillation for
    Semantic Segmentation", CVPR 2019; defaults are the authors' code (irfanICMLL/
    structure_knowledge_distillation, ``networks/kd_model.py``, ``utils/train_options.py``).

    Pair-wise (``skd_pairwise``): the feature map ``at`` is max-pooled into a grid of nodes
    (kernel ``pool_scale`` × its size, ceil mode: the authors' ``--pool-scale 0.5`` gives a 2×2
    grid; ``pool_size`` = k, when set, pools k×k instead, as the CIRKD benchmark's 2), each
    node's channel vector is L2-normalised and ``a_ij`` is the cosine similarity of nodes i, j;
    the loss is the mean over images and node pairs of ``(a_ij^s − a_ij^t)²``, weight 1
    (``--lambda-pa``; ``weight=0`` drops the term). The student map is resized to the teacher's
    H×W when they differ. (The authors' code stops the gradient through the vector norms; here
    it flows through the normalisation.)

    Holistic (``skd_adv``): a Wasserstein critic D (:class:`ScoreMapDiscriminator`) scores
    class-score maps (the classifier's logits, feature point ``logits``); the student's term is
    ``−adv_weight · mean D(s)`` (λ_d = 0.1, ``--lambda-d``). D trains itself
    (:class:`~segkd.distill.critic.SelfTrainedCritic`): after the student's term is built, D takes
    one step on ``d_loss_weight · (mean D(s) − mean D(t) + λ_gp · GP)`` (0.1, λ_gp = 10) with its
    own optimiser, as the reference alternates G and D steps: SGD at ``d_lr`` 4e-4, momentum 0.9,
    weight decay 1e-4, poly decay (power 0.9) over the run, independent of the student's LR, its
    parameter groups and ``loss.distill_share``. ``skd_adv_d`` logs D's loss (no gradient: it
    adds nothing to the student's). ``adv_weight=0`` drops the holistic term and D.

    SKD's pixel-wise term is ``logits_kd`` (weight 10 in the paper): the method ``skd_full`` is
    the paper's whole recipe. Returns ``{"skd_pairwise", "skd_adv", "skd_adv_d"}``, weighted.
    """

    paper = "Liu et al., Structured Knowledge Distillation for Semantic Segmentation, CVPR 2019"
    terms = {
        "skd_pairwise": "squared difference of pooled-node cosine affinities",
        "skd_adv": "Wasserstein adversarial term of the student's score maps (holistic)",
        "skd_adv_d": "the critic's WGAN-GP loss, logged only (the critic steps its own optimiser)",
    }

    def __init__(self, at: str = "head", pool_scale: float | None = 0.5, pool_size: int | None = None,
                 weight: float = 1.0, adv_weight: float = 0.1, gp_weight: float = 10.0, d_loss_weight: float = 0.1,
                 d_optimizer: str = "sgd", d_lr: float = 4e-4, d_momentum: float = 0.9,
                 d_weight_decay: float = 1e-4, d_channels: int = 64) -> None:
        super().__init__()
        if pool_size is None and pool_scale is None:
            raise ValueError("skd: set 'pool_scale' (the authors' 0.5) or 'pool_size' (e.g. 2)")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"option 'pool_size' must be >= 1, got {pool_size}")
        if pool_scale is not None and not 0 < pool_scale <= 1:
            raise ValueError(f"option 'pool_scale' must be in (0, 1], got {pool_scale}")
        self.pool_scale, self.pool_size, self.weight = pool_scale, pool_size, weight
        self.adv_weight, self.gp_weight, self.d_channels = adv_weight, gp_weight, d_channels
        self.critic_options = {"optimizer": d_optimizer, "lr": d_lr, "momentum": d_momentum,
                               "weight_decay": d_weight_decay, "gp_weight": gp_weight, "loss_weight": d_loss_weight}
        check_choice("d_optimizer", d_optimizer, OPTIMIZERS)  # bad options fail here, not in setup
        if d_lr <= 0:
            raise ValueError(f"option 'd_lr' must be > 0, got {d_lr}")
        self.critic: SelfTrainedCritic | None = None
        taps = {**({TAPPED: at} if weight else {}), **({SCORES: "logits"} if adv_weight else {})}
        self.student_taps = dict(taps)
        self.teacher_taps = dict(taps)

    def setup(self, student_shapes: Mapping[str, torch.Size],
              teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        if self.adv_weight:
            assert teacher_shapes is not None, "skd needs a teacher"
            shape = teacher_shapes[SCORES]
            net = ScoreMapDiscriminator(int(shape[1]), tuple(shape[-2:]), self.d_channels)
            self.critic = SelfTrainedCritic(net, **self.critic_options)

    def set_progress(self, progress: float) -> None:
        if self.critic is not None:
            self.critic.set_progress(progress)

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        assert teacher is not None, "skd needs a teacher"
        terms: dict[str, torch.Tensor] = {}
        with full_precision(student["out"]):
            if self.weight:
                target = teacher[TAPPED].detach().float()
                source = resize_like(student[TAPPED].float(), target)
                kernel = self._kernel(tuple(target.shape[-2:]))
                difference = self.affinity(source, kernel) - self.affinity(target, kernel)
                terms["skd_pairwise"] = self.weight * difference.pow(2).mean()
            if self.critic is not None:
                terms.update(self.holistic(student[SCORES].float(), teacher[SCORES].detach().float()))
        return terms

    def holistic(self, s_scores: torch.Tensor, t_scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """The student's adversarial term, then one step of the critic (see the class doc)."""
        assert self.critic is not None
        student_term = -self.critic.score(s_scores).mean()
        critic_loss = self.critic.train_step(s_scores.detach(), t_scores)
        return {"skd_adv": self.adv_weight * student_term, "skd_adv_d": critic_loss}

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
