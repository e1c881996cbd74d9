"""A critic that trains itself: the holistic (adversarial) term's discriminator with its own optimiser.

The reference code of SKD and IFVD trains the discriminator D with an optimiser and learning rate
of its own, alternating a student step and a D step on the same forward pass. The trainer knows no
method by name, so the method does the D step itself, inside its ``forward``:

1. the student's term ``−mean D(s)`` is built through a snapshot of D's current weights (constants:
   no gradient reaches D, and the D step below cannot invalidate the student's graph);
2. D's WGAN-GP loss on the detached scores is back-propagated into D alone and D's optimiser
   steps, so the next batch meets the updated D, as in the reference.

D's parameters are left out of the method's ``parameters()`` (:class:`SelfTrainedCritic` sets
``steps_itself``): the student's optimiser never holds them, and neither its learning rate,
weight decay nor ``loss.distill_share`` touches D. The optimiser's state travels with the
method's ``state_dict`` (``get_extra_state``: plain tensors, numbers, strings, lists and dicts).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call

from segkd.distill.discriminator import gradient_penalty
from segkd.distill.functional import check_choice

OPTIMIZERS = ("sgd", "adam")


class SelfTrainedCritic(nn.Module):
    """``net`` (a score-map discriminator) with its own SGD or Adam, stepped by :meth:`train_step`.

    Args:
        net: the critic, B×K×h×w scores → B×1×h'×w'.
        optimizer: ``"sgd"`` (SKD's reference: momentum, weight decay) or ``"adam"`` (IFVD's:
            ``betas``, no weight decay in its code).
        lr: base learning rate (4e-4 in both references), decayed by ``(1 − progress)^lr_power``
            as the references' poly schedule (``set_progress``, called through the method).
        gp_weight: λ_gp of the WGAN-GP penalty. loss_weight: λ_d, D's loss factor.
    """

    steps_itself = True  # DistillMethod.parameters() leaves these parameters out

    def __init__(self, net: nn.Module, optimizer: str = "sgd", lr: float = 4e-4, momentum: float = 0.9,
                 weight_decay: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), lr_power: float = 0.9,
                 gp_weight: float = 10.0, loss_weight: float = 0.1) -> None:
        super().__init__()
        check_choice("d_optimizer", optimizer, OPTIMIZERS)
        self.net = net
        self.base_lr, self.lr_power = lr, lr_power
        self.gp_weight, self.loss_weight = gp_weight, loss_weight
        params = list(net.parameters())
        if optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    def set_progress(self, progress: float) -> None:
        """Poly decay of D's learning rate with the fraction of training done."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * max(0.0, 1.0 - progress) ** self.lr_power

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def score(self, scores: Tensor) -> Tensor:
        """D(scores) with D's weights as constants: gradients reach ``scores`` only."""
        weights = {name: p.detach().clone() for name, p in self.net.named_parameters()}
        return functional_call(self.net, weights, (scores,))

    def loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """λ_d · (mean D(fake) − mean D(real) + λ_gp · GP); the penalty only where gradients exist."""
        value = self.net(fake.detach()).mean() - self.net(real.detach()).mean()
        if torch.is_grad_enabled():
            value = value + self.gp_weight * gradient_penalty(self.net, real, fake)
        return self.loss_weight * value

    def train_step(self, fake: Tensor, real: Tensor) -> Tensor:
        """One D update on detached student (fake) and teacher (real) scores; returns D's loss.

        Outside training (``eval()`` or no grad) D is only evaluated. Under DDP, D's gradients
        are averaged over ranks before the step, so every rank keeps the same D.
        """
        if not (self.training and torch.is_grad_enabled()):
            with torch.no_grad():
                return self.loss(fake, real)
        loss = self.loss(fake, real)
        params = [p for p in self.net.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        for p, grad in zip(params, grads):
            if grad is not None and distributed:
                dist.all_reduce(grad)
                grad /= dist.get_world_size()
            p.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": _plain(self.optimizer.state_dict())}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (checkpoints load with ``weights_only=True``)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
