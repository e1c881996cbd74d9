"""Where a training step gets the teacher's tensors from.

A teacher source is called with the batch and returns ``{tap: tensor}`` merged with the
teacher's outputs, as ``DistillMethod.forward`` expects. The trainer calls it the same way
whatever it is, so it holds no branch for how the teacher's tensors are obtained.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from segkd.config import Config
from segkd.distill import FeatureTaps
from segkd.engine.distributed import DistEnv
from segkd.engine.teacher_cache import open_cached_teacher
from segkd.models.outputs import model_outputs


class TeacherSource(Protocol):
    model: nn.Module  # the teacher network (its own metrics are reported at the end)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]: ...

    def close(self) -> None: ...


class LiveTeacher:
    """The frozen teacher run on every batch (eval mode, ``torch.inference_mode``).

    Use it as a context manager, so its feature hooks are removed however the run ends.
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str]) -> None:
        self.model = model
        self.hooks = FeatureTaps(model, taps)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        with torch.inference_mode():
            raw = {**model_outputs(self.model(images), images.shape[-2:], who="the teacher"), **self.hooks.pop()}
        # inference tensors cannot enter autograd graphs; a clone outside the mode can
        return {k: v.clone() for k, v in raw.items()}

    def close(self) -> None:
        self.hooks.remove()

    def __enter__(self) -> LiveTeacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def teacher_source(cfg: Config, model: nn.Module, methods: nn.ModuleList, taps: Mapping[str, str],
                   train_set: Any, example: torch.Tensor, env: DistEnv, device: torch.device) -> TeacherSource:
    """The live teacher; with ``distill.teacher.cache`` the cached one, after filling the cache if
    it is not complete, and ``train_set`` then carries the cached maps with every sample."""
    if cfg.distill.teacher is None or cfg.distill.teacher.cache is None:
        return LiveTeacher(model, taps)
    return open_cached_teacher(cfg, model, methods, taps, train_set, example, env, device)
