"""Cross-image relational KD: pixel-to-pixel similarities across images follow the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.distill.base import DistillMethod, register_method
from segkd.distill.functional import check_choice, full_precision, kl_rows, labels_at, resize_like, tap_channels

TAPPED = "cirkd_input"


@register_method("cirkd")
class CrossImageRelationalKD(DistillMethod):
    """CIRKD (Yang et al., "Cross-Image Relational Knowledge Distillation for Semantic
    Segmentation", CVPR 2022): pixel-to-pixel terms on L2-normalised pixel embeddings of a
    feature map (default ``head``).

    - In-batch term: for every ordered pair of images (i, j) in the batch, each pixel of i gets a
      distribution over the pixels of j, ``softmax(f_iᵀ f_j / τ)``; KL(teacher ‖ student) summed
      over j's pixels, averaged over i's pixels and over the B² pairs. Similarities need no
      common channel count, so the student's raw embeddings are used.
    - Memory term: a queue (``memory_size`` rows) of teacher embeddings, ``enqueue_per_image``
      random labelled pixels per image from past batches. Each labelled student pixel, passed
      through the projection head, gets a distribution over the queue,
      ``softmax(sᵀ m / (τ·τ_kd))``, matched to the teacher pixel's; KL summed over the queue,
      averaged over anchors, × τ_kd². The queue is filled after the loss (0 on the first step).

    Defaults from the authors' code: τ = 0.1, τ_kd = 1, in-batch weight 1, memory weight 0.1
    (its VOC script uses 0.01), a projection head 1×1 conv → BN → ReLU → 1×1 conv on the student
    (``projection="always"``; ``"auto"`` only when channels differ; ``"none"`` never).
    Simplified here: one class-agnostic queue, not one per class with class-balanced sampling
    (20000 per class there); no region-level memory (class-mean embeddings); no cross-GPU gather.

    Returns ``{"cirkd_batch": weight · in-batch, "cirkd_memory": memory_weight · memory}``.
    """

    paper = (
        "Yang et al., Cross-Image Relational Knowledge Distillation for Semantic Segmentation, "
        "CVPR 2022"
    )
    task = "semantic"

    def __init__(
        self,
        at: str = "head",
        tau: float = 0.1,
        kd_tau: float = 1.0,
        weight: float = 1.0,
        memory_weight: float = 0.1,
        memory_size: int = 4096,
        enqueue_per_image: int = 64,
        projection: str = "always",
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        check_choice("projection", projection, ("always", "auto", "none"))
        if not 0 < enqueue_per_image <= memory_size:
            sizes = f"enqueue_per_image={enqueue_per_image}, memory_size={memory_size}"
            raise ValueError(f"options need 0 < enqueue_per_image <= memory_size; got {sizes}")
        self.tau, self.kd_tau = tau, kd_tau
        self.weight, self.memory_weight = weight, memory_weight
        self.memory_size, self.enqueue_per_image = memory_size, enqueue_per_image
        self.projection_mode, self.ignore_index = projection, ignore_index
        self.projection: nn.Module | None = None
        self.student_taps = {TAPPED: at}
        self.teacher_taps = {TAPPED: at}

    def setup(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size] | None,
    ) -> None:
        assert teacher_shapes is not None, "cirkd needs a teacher"
        s_ch = tap_channels(student_shapes, TAPPED, "student", self.name)
        t_ch = tap_channels(teacher_shapes, TAPPED, "teacher", self.name)
        if self.projection_mode == "always" or (self.projection_mode == "auto" and s_ch != t_ch):
            self.projection = nn.Sequential(
                nn.Conv2d(s_ch, t_ch, 1, bias=False), nn.BatchNorm2d(t_ch), nn.ReLU(inplace=True),
                nn.Conv2d(t_ch, t_ch, 1, bias=False),
            )
        elif s_ch != t_ch:
            raise ValueError(f"method 'cirkd': projection='none' but the student has {s_ch} "
                             f"channels and the teacher {t_ch}; use 'auto' or 'always'")
        self.register_buffer("memory", torch.zeros(self.memory_size, t_ch))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_next", torch.zeros((), dtype=torch.long))

    def forward(
        self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor] | None,
        batch: Mapping[str, Any],
    ) -> dict[str, Tensor]:
        assert teacher is not None, "cirkd needs a teacher"
        feature = student[TAPPED]
        target = teacher[TAPPED].detach()
        projected = self.projection(feature) if self.projection is not None else feature
        with full_precision(target):
            t_emb = F.normalize(target.float(), dim=1)
            s_emb = F.normalize(resize_like(feature.float(), target), dim=1)
            batch_term = self.in_batch_loss(s_emb, t_emb)
            anchors = F.normalize(resize_like(projected.float(), target), dim=1)
            valid = labels_at(batch["mask"], target.shape[-2:]) != self.ignore_index
            memory_term = self.memory_loss(anchors, t_emb, valid)
            if self.training:
                self._enqueue(t_emb, valid)
        return {
            "cirkd_batch": self.weight * batch_term,
            "cirkd_memory": self.memory_weight * memory_term,
        }

    def in_batch_loss(self, s_emb: Tensor, t_emb: Tensor) -> Tensor:
        """Unit embeddings B×C×h×w (channels may differ) → mean pixel-to-pixel KL over B² pairs."""
        s_pixels, t_pixels = s_emb.flatten(2), t_emb.flatten(2)  # B×C×N
        total = s_emb.new_zeros(())
        for i in range(s_emb.shape[0]):  # one anchor image at a time keeps memory at B·N²
            s_scores = s_pixels[i].T @ s_pixels / self.tau  # B×N×N
            total = total + kl_rows(s_scores, t_pixels[i].T @ t_pixels / self.tau).mean()
        return total / s_emb.shape[0]

    def memory_loss(self, anchors: Tensor, t_emb: Tensor, valid: Tensor) -> Tensor:
        """KL between student and teacher similarity distributions over the stored embeddings."""
        filled = int(self.memory_filled)
        if filled == 0 or not valid.any():
            return anchors.sum() * 0.0
        bank = self.memory[:filled].clone()  # the queue is overwritten before backward runs
        scale = self.tau * self.kd_tau
        s_scores = anchors.movedim(1, -1)[valid] @ bank.T / scale  # M×K
        t_scores = t_emb.movedim(1, -1)[valid] @ bank.T / scale
        return kl_rows(s_scores, t_scores).mean() * self.kd_tau**2

    @torch.no_grad()
    def _enqueue(self, t_emb: Tensor, valid: Tensor) -> None:
        """Store up to ``enqueue_per_image`` random labelled teacher pixels of each image."""
        for image, image_valid in zip(t_emb, valid):
            pixels = image.movedim(0, -1)[image_valid]  # n×C
            if len(pixels) == 0:
                continue
            order = torch.randperm(len(pixels), device=pixels.device)
            chosen = pixels[order[: self.enqueue_per_image]]
            start = int(self.memory_next)
            slots = (start + torch.arange(len(chosen), device=chosen.device)) % self.memory_size
            self.memory[slots] = chosen
            self.memory_next.fill_((start + len(chosen)) % self.memory_size)
            self.memory_filled.fill_(min(int(self.memory_filled) + len(chosen), self.memory_size))
