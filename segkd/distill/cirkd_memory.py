"""CIRKD's memory: per-class queues of teacher pixel embeddings and region (class-mean) embeddings."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.distill.functional import kl_rows


def gather_from_ranks(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (same shape on every rank) along dim 0 over DDP ranks; no gradient.

    Without an initialised process group (one process) the tensor itself is returned.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class ClassQueues(nn.Module):
    """Class-balanced FIFO memories of unit teacher embeddings, as in CIRKD's code.

    - ``pixels``: K×P×D, for each class the last P pixel embeddings; each image adds up to
      ``pixels_per_image`` random pixels of each class it contains (16 in the reference).
    - ``regions``: K×R×D, for each class the last R region embeddings, a region being the
      normalised mean embedding of one class's pixels in one image.

    Both start as random unit vectors (the reference's initialisation), so the memory terms are
    defined from the first step. Embeddings are gathered from every DDP rank before they are
    stored, as the reference does, so each rank's memory sees the whole global batch.
    Buffers are checkpointed with the method: K·(P + R)·D floats (21 classes, 20000 + 2000
    entries of 256 channels: 473 MB), so a resumed run continues with the same memory.
    """

    def __init__(self, num_classes: int, dim: int, pixel_size: int, region_size: int,
                 pixels_per_image: int) -> None:
        super().__init__()
        self.pixels_per_image = pixels_per_image
        self.register_buffer("pixels", F.normalize(torch.randn(num_classes, pixel_size, dim), dim=2))
        self.register_buffer("regions", F.normalize(torch.randn(num_classes, region_size, dim), dim=2))
        self.register_buffer("pixel_next", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("region_next", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor, ignore_index: int) -> None:
        """Store unit embeddings B×D×h×w of the labelled pixels (labels B×h×w), all ranks' batches."""
        embeddings, labels = gather_from_ranks(embeddings), gather_from_ranks(labels)
        num_classes, pixel_size, _ = self.pixels.shape
        for image, image_labels in zip(embeddings.movedim(1, -1), labels):
            for cls in image_labels.unique().tolist():
                if cls == ignore_index or not 0 <= cls < num_classes:
                    continue
                members = image[image_labels == cls]  # n×D
                slot = int(self.region_next[cls])
                self.regions[cls, slot] = F.normalize(members.mean(dim=0), dim=0)
                self.region_next[cls] = (slot + 1) % self.regions.shape[1]
                chosen = members[torch.randperm(len(members), device=members.device)[: self.pixels_per_image]]
                start = int(self.pixel_next[cls])
                slots = (start + torch.arange(len(chosen), device=chosen.device)) % pixel_size
                self.pixels[cls, slots] = chosen
                self.pixel_next[cls] = (start + len(chosen)) % pixel_size

    def sample(self, queue: Tensor, per_class: int) -> Tensor:
        """The same ``per_class`` random slots of every class of ``queue`` (K×S×D) → (K·n)×D."""
        index = torch.randperm(queue.shape[1], device=queue.device)[:per_class]
        return queue[:, index].reshape(-1, queue.shape[2])


def memory_kl(anchors: Tensor, t_emb: Tensor, valid: Tensor, bank: Tensor, tau: float,
              kd_tau: float) -> Tensor:
    """KL(teacher ‖ student) of each labelled pixel's similarities to the memory sample ``bank``.

    ``anchors`` (student, projected) and ``t_emb`` are unit B×D×h×w, ``valid`` B×h×w, ``bank``
    M×D; scores are ``xᵀ m / (τ·τ_kd)``. KL summed over ``bank``, averaged over the labelled
    pixels, × τ_kd² (the reference's ``batchmean``). No labelled pixel: 0, still in the graph.
    """
    if not valid.any():
        return anchors.sum() * 0.0
    scale = tau * kd_tau
    s_scores = anchors.movedim(1, -1)[valid] @ bank.T / scale  # anchors×M
    t_scores = t_emb.movedim(1, -1)[valid] @ bank.T / scale
    return kl_rows(s_scores, t_scores).mean() * kd_tau**2
