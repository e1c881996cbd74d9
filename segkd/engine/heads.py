"""The self-distillation methods' own prediction heads (auxiliary branches, a self-teacher), scored
like the student's output: a diagnostic of what they have to teach; nothing is ever picked on it."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from segkd.config import Config
from segkd.distill import DistillMethod
from segkd.engine.distiller import Distiller
from segkd.engine.distributed import DistEnv
from segkd.engine.evaluate import evaluate_with_config


def has_heads(method: nn.Module | type) -> bool:
    """Whether a method (or method class) trains prediction heads of its own (overrides
    ``DistillMethod.head_logits``)."""
    cls = method if isinstance(method, type) else type(method)
    return cls.head_logits is not DistillMethod.head_logits


class HeadAsModel(nn.Module):
    """One of a distiller's heads as a model whose ``"out"`` is that head's logits (to evaluate it)."""

    def __init__(self, student: nn.Module, distiller: Distiller, head: str) -> None:
        super().__init__()
        self.student, self.head = student, head
        self.__dict__["distiller"] = distiller  # not a sub-module: its parts are not this model's to own

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.distiller.head_logits(self.student(image), image)[self.head]}


def score_heads(student: nn.Module, distiller: Distiller, dataset: Dataset, cfg: Config, device: torch.device,
                env: DistEnv | None = None) -> dict[str, dict[str, Any]]:
    """``{"method/head": metrics}`` of every head of ``distiller``'s methods on ``dataset``, each scored
    as ``segkd eval`` scores a model; empty when no method has heads. The modes of the student and
    of the methods' parts are restored afterwards."""
    if not any(has_heads(m) for m in distiller.methods):
        return {}
    modes = [(m, m.training) for m in (student, distiller.methods)]
    student.eval(), distiller.methods.eval()
    try:
        example = dataset[0]["image"][None].to(device)
        with torch.no_grad():
            names = list(distiller.head_logits(student(example), example))
        return {name: evaluate_with_config(HeadAsModel(student, distiller, name).eval(), dataset, cfg, device, env)
                for name in names}
    finally:
        for module, training in modes:
            module.train(training)


__all__ = ["HeadAsModel", "has_heads", "score_heads"]
