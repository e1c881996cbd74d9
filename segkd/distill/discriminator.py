"""The score-map discriminator of structured KD's holistic term, and its Wasserstein losses."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

# The reference discriminator has four stride-2 layers for 65×65 score maps (a 512 crop at
# output stride 8), self-attention after the third and the fourth.
MAX_DOWNSAMPLINGS = 4
ATTENTION_AFTER = (3, 4)


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + γ · V softmax(QᵀK)ᵀ``, γ learned from 0 (B×C×H×W → same)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.key = nn.Conv2d(channels, max(1, channels // 8), 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k = self.query(x).flatten(2), self.key(x).flatten(2)  # B×C'×N
        attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # B×N×N, each row over keys
        out = self.value(x).flatten(2) @ attention.transpose(1, 2)
        return x + self.gamma * out.view(b, c, h, w)


class ScoreMapDiscriminator(nn.Module):
    """SKD's discriminator (SAGAN style) on class-score maps B×K×h×w → one score per position.

    BatchNorm on the input scores (the reference's ``preprocess_GAN_mode=1``), then stride-2 4×4
    spectral-normalised convs with LeakyReLU(0.1) and ``channels``, 2×, 4×, 8× that many
    filters, self-attention after the third and fourth, and a plain 4×4 conv to one channel.
    The reference fixes four stride-2 layers for 65×65 maps; smaller maps get fewer
    (⌊log2(min(h, w))⌋ − 1, at least one) and a last kernel no larger than what remains, so any
    training size works. Returns B×1×h'×w' scores (the Wasserstein losses average them).
    """

    def __init__(self, num_classes: int, size: tuple[int, int], channels: int = 64) -> None:
        super().__init__()
        side = min(size)
        downsamplings = max(1, min(MAX_DOWNSAMPLINGS, int(math.log2(max(side, 1))) - 1))
        layers: list[nn.Module] = [nn.BatchNorm2d(num_classes)]
        width_in, width = num_classes, channels
        for index in range(1, downsamplings + 1):
            layers += [spectral_norm(nn.Conv2d(width_in, width, 4, 2, 1)), nn.LeakyReLU(0.1)]
            if index in ATTENTION_AFTER:
                layers.append(SelfAttention(width))
            side //= 2
            width_in, width = width, width * 2
        layers.append(nn.Conv2d(width_in, 1, max(1, min(4, side))))
        self.net = nn.Sequential(*layers)

    def forward(self, scores: Tensor) -> Tensor:
        return self.net(scores)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean over samples of (‖∇ₓ D(x̂)‖₂ − 1)², x̂ on the line
    between a detached real and fake sample (one uniform draw per sample). Kept in the graph so
    that backward reaches the critic's parameters."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
