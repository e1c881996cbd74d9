"""The base of methods that compare a student tensor with the teacher's at the same place."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from segkd.distill.base import DistillMethod
from segkd.distill.mapping import mapped_pair, pair_mapping


class PairedTapMethod(DistillMethod):
    """A method that taps the student and the teacher at one feature point ``at`` (CWD, IFVD,
    CIRKD, Af-DCD), both under the local name ``tapped``; ``at="out"`` reads the models' output
    (at input size) instead, which needs no tap. ``key`` is the name the pair is read under.

    Subclasses implement ``setup_pair`` (optional) and ``pair_losses``, which receive the
    teacher's shapes / tensors, never ``None``: a missing teacher is one clear error here.
    """

    tapped: ClassVar[str] = "paired_input"

    def __init__(self, at: str) -> None:
        super().__init__()
        self.key = "out" if at == "out" else self.tapped
        self.student_taps = {} if at == "out" else {self.tapped: at}
        self.teacher_taps = dict(self.student_taps)

    def setup(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        self.setup_pair(student_shapes, self._teacher(teacher_shapes))

    def setup_pair(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]) -> None:
        """Build learnable parts from the tapped shapes (default: nothing to build)."""

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.pair_losses(student, self._teacher(teacher), batch)

    def pair_losses(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                    batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def pair_mapping(self, mode: str, student_shapes: Mapping[str, torch.Size],
                     teacher_shapes: Mapping[str, torch.Size]) -> nn.Module | None:
        """The mapping (``segkd.distill.mapping``) from the student's tapped channels to the teacher's."""
        return pair_mapping(mode, student_shapes, teacher_shapes, self.key, self.name)

    def mapped_pair(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                    mapping: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the student's tapped tensor through ``mapping``, the teacher's cut from the graph)."""
        return mapped_pair(student, teacher, self.key, mapping)

    def _teacher(self, teacher: Any) -> Any:
        if teacher is None:
            raise ValueError(f"method '{self.name}' needs a teacher: set distill.teacher")
        return teacher
