"""Learning-rate schedules as pure functions of the iteration."""
from __future__ import annotations


def lr_factor(name: str, iteration: int, max_iters: int, iters_per_epoch: int, power: float = 0.9,
              warmup: float = 0.0) -> float:
    """Multiplier of every group's base LR at ``iteration`` (0-based).

    ``warmup`` (a fraction of ``max_iters``) scales the schedule by a linear ramp from
    1/(warm-up iterations) to 1 over its first iterations, so a randomly initialised head cannot
    send large gradients into a pretrained backbone in the first steps.

    - ``poly``: ``(1 − it/max_iters)^power``, updated every iteration (semseg).
    - ``triangle``: per epoch e of E, ``1 − |2(e+1)/(E+1) − 1|``: a linear warm-up to the middle
      epoch then a linear decay (F3Net and the SOD set-ups that follow it).
    - ``constant``: 1.
    """
    warmup_iters = round(warmup * max_iters)
    ramp = min(1.0, (iteration + 1) / warmup_iters) if warmup_iters else 1.0
    return ramp * _schedule(name, iteration, max_iters, iters_per_epoch, power)


def _schedule(name: str, iteration: int, max_iters: int, iters_per_epoch: int, power: float) -> float:
    if name == "poly":
        return (1 - min(iteration, max_iters) / max_iters) ** power
    if name == "triangle":
        epochs = max(1, -(-max_iters // iters_per_epoch))
        epoch = min(iteration // iters_per_epoch, epochs - 1)
        return 1 - abs(2 * (epoch + 1) / (epochs + 1) - 1)
    if name == "constant":
        return 1.0
    raise ValueError(f"unknown schedule '{name}'")
