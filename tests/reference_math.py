"""Reference computations the loss tests compare with, written out apart from segkd's code: softmax, KL
divergence and unit vectors in plain Python, the binary (sigmoid) KL in float64 numpy."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p_t: list[float], p_s: list[float]) -> float:
    return sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s))


def unit(v: list[float]) -> list[float]:
    """``v`` scaled to Euclidean length 1."""
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def np_kl_binary(student: torch.Tensor, target: torch.Tensor, t: float) -> float:
    """Mean Bernoulli KL(σ(target/T) ‖ σ(student/T)) · T² over every element, in float64 numpy."""
    p_s = np_sigmoid(student.detach().double().numpy() / t)
    p_t = np_sigmoid(target.detach().double().numpy() / t)
    kl = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    return float(kl.mean() * t * t)
