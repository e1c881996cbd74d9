"""Plain-Python softmax and KL divergence, the hand computations loss tests compare with."""
import math


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p_t: list[float], p_s: list[float]) -> float:
    return sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s))
