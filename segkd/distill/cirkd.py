"""Cross-image relational KD: pixel-to-pixel similarities across images follow the teacher's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.distill.base import register_method
from segkd.distill.cirkd_memory import ClassQueues, memory_kl
from segkd.distill.functional import check_choice, full_precision, kl_rows, labels_at, resize_like, tap_channels
from segkd.distill.options import check_temperature
from segkd.distill.paired import PairedTapMethod


@register_method("cirkd")
class CrossImageRelationalKD(PairedTapMethod):
    """CIRKD (Yang et al., "Cross-Image Relational Knowledge Distillation for Semantic
    Segmentation", CVPR 2022): pixel-to-pixel and pixel-to-region terms on L2-normalised pixel
    embeddings of a feature map (default ``head``).

    - In-batch term (``cirkd_batch``): for every ordered pair of images (i, j) in the batch, each
      pixel of i gets a distribution over the pixels of j, ``softmax(f_iᵀ f_j / τ)``;
      KL(teacher ‖ student) summed over j's pixels, averaged over i's pixels and the B² pairs.
      Similarities need no common channel count, so the student's raw embeddings are used.
      Per rank, as the reference code (its cross-rank gather is commented out).
    - Memory terms: per-class queues of teacher embeddings (:class:`ClassQueues`):
      ``pixel_memory_size`` pixels and ``region_memory_size`` regions (class means of one
      image) per class, filled with random unit vectors at the start and updated with the
      current batch of every DDP rank *before* the loss, as the reference. Each labelled
      student pixel, through the projection head, gets a distribution over a sample of the
      memory, ``softmax(sᵀ m / (τ·τ_kd))``, matched to the teacher pixel's: KL summed over the
      sample, averaged over anchors, × τ_kd². Terms ``cirkd_pixel_memory`` and
      ``cirkd_region_memory``. The sample: the same ``size // K + 1`` random slots of each of
      the K classes, ``size`` being ``pixel_contrast_size`` / ``region_contrast_size``, totals
      as in the reference's training script (4096 → 216 pixels, 1024 → 54 regions per class on
      Cityscapes). Each anchor is scored against about 4096 + 1024 memory entries.

    Defaults from the authors' code (``train_cirkd.py`` / ``losses/cirkd_memory.py`` of
    winycg/CIRKD): τ = 0.1 (``temperature``), τ_kd = 1 (``kd_temperature``), weights 1
    (in-batch), 0.1 (pixel memory), 0.1 (region memory; its VOC scripts use 0.01 for both),
    memories of 20000 pixels / 2000 regions per class, 16 pixels per class and image enqueued,
    contrast totals 4096 / 1024, a projection head 1×1 conv → BN → ReLU → 1×1 conv on the
    student (``projection="always"``; ``"auto"`` only when channels differ; ``"none"`` never).
    The reference's pixel enqueue indexes the image's pixels in raster order (all classes) with
    a random permutation of ``range(n_c)``, n_c the class's pixel count: it stores random pixels
    among the image's first n_c, whatever their class; segkd stores random pixels of that class.
    K: the teacher's output channels.

    Returns ``{"cirkd_batch", "cirkd_pixel_memory", "cirkd_region_memory"}``, each weighted.
    """

    paper = (
        "Yang et al., Cross-Image Relational Knowledge Distillation for Semantic Segmentation, "
        "CVPR 2022"
    )
    task = "semantic"
    terms = {
        "cirkd_batch": "KL of pixel-to-pixel similarities across the batch's image pairs",
        "cirkd_pixel_memory": "KL of pixel-to-pixel similarities to the class-balanced pixel memory",
        "cirkd_region_memory": "KL of pixel-to-region similarities to the class-mean memory",
    }
    tapped = "cirkd_input"
    renamed_options = {"tau": "temperature", "kd_tau": "kd_temperature"}

    def __init__(
        self,
        at: str = "head",
        temperature: float = 0.1,
        kd_temperature: float = 1.0,
        weight: float = 1.0,
        pixel_memory_weight: float = 0.1,
        region_memory_weight: float = 0.1,
        pixel_memory_size: int = 20000,
        region_memory_size: int = 2000,
        pixel_contrast_size: int = 4096,
        region_contrast_size: int = 1024,
        pixels_per_image: int = 16,
        projection: str = "always",
    ) -> None:
        super().__init__(at)
        check_choice("projection", projection, ("always", "auto", "none"))
        sizes = {"pixel_memory_size": pixel_memory_size, "region_memory_size": region_memory_size,
                 "pixel_contrast_size": pixel_contrast_size, "region_contrast_size": region_contrast_size,
                 "pixels_per_image": pixels_per_image}
        if min(sizes.values()) < 1:
            raise ValueError(f"cirkd: every size option must be >= 1; got {sizes}")
        self.temperature = check_temperature(temperature, self.name)
        self.kd_temperature = check_temperature(kd_temperature, self.name, "kd_temperature")
        self.weights = (weight, pixel_memory_weight, region_memory_weight)
        self.sizes = sizes
        self.projection_mode = projection
        self.projection: nn.Module | None = None
        self.memory: ClassQueues | None = None

    def setup_pair(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]) -> None:
        s_ch = tap_channels(student_shapes, self.key, "student", self.name)
        t_ch = tap_channels(teacher_shapes, self.key, "teacher", self.name)
        if self.projection_mode == "always" or (self.projection_mode == "auto" and s_ch != t_ch):
            self.projection = nn.Sequential(
                nn.Conv2d(s_ch, t_ch, 1, bias=False), nn.BatchNorm2d(t_ch), nn.ReLU(inplace=True),
                nn.Conv2d(t_ch, t_ch, 1, bias=False),
            )
        elif s_ch != t_ch:
            raise ValueError(f"method 'cirkd': projection='none' but the student has {s_ch} "
                             f"channels and the teacher {t_ch}; use 'auto' or 'always'")
        num_classes = tap_channels(teacher_shapes, "out", "teacher", self.name)
        self.per_class = {key: self.sizes[key] // num_classes + 1
                          for key in ("pixel_contrast_size", "region_contrast_size")}
        self.memory = ClassQueues(num_classes, t_ch, self.sizes["pixel_memory_size"],
                                  self.sizes["region_memory_size"], self.sizes["pixels_per_image"])

    def pair_losses(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor],
                    batch: Mapping[str, Any]) -> dict[str, Tensor]:
        assert self.memory is not None, "cirkd: setup() builds the memory before the first step"
        feature, target = self.mapped_pair(student, teacher)
        projected = self.projection(feature) if self.projection is not None else feature
        with full_precision(target):
            t_emb = F.normalize(target.float(), dim=1)
            s_emb = F.normalize(resize_like(feature.float(), target), dim=1)
            batch_term = self.in_batch_loss(s_emb, t_emb)
            anchors = F.normalize(resize_like(projected.float(), target), dim=1)
            labels = labels_at(batch["mask"], target.shape[-2:])
            if self.training:
                self.memory.enqueue(t_emb, labels, self.ignore_index)
            valid = labels != self.ignore_index
            pixel_bank = self.memory.sample(self.memory.pixels, self.per_class["pixel_contrast_size"])
            region_bank = self.memory.sample(self.memory.regions, self.per_class["region_contrast_size"])
            pixel_term = memory_kl(anchors, t_emb, valid, pixel_bank, self.temperature, self.kd_temperature)
            region_term = memory_kl(anchors, t_emb, valid, region_bank, self.temperature, self.kd_temperature)
        values = (batch_term, pixel_term, region_term)
        return {term: w * v for term, w, v in zip(self.terms, self.weights, values)}

    def in_batch_loss(self, s_emb: Tensor, t_emb: Tensor) -> Tensor:
        """Unit embeddings B×C×h×w (channels may differ) → mean pixel-to-pixel KL over B² pairs."""
        s_pixels, t_pixels = s_emb.flatten(2), t_emb.flatten(2)  # B×C×N
        total = s_emb.new_zeros(())
        for i in range(s_emb.shape[0]):  # one anchor image at a time keeps memory at B·N²
            s_scores = s_pixels[i].T @ s_pixels / self.temperature  # B×N×N
            total = total + kl_rows(s_scores, t_pixels[i].T @ t_pixels / self.temperature).mean()
        return total / s_emb.shape[0]
