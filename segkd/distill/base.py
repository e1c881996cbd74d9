"""The contract every distillation method follows.

A method is a small ``nn.Module`` registered with ``@register_method("name")``. It declares
what it reads, and returns a dict of named losses that are already multiplied by their configured
weights; the trainer sums them and logs each term. The trainer knows no method by name.
A sub-module with ``steps_itself = True`` (SKD's critic) trains by its own optimiser inside
``forward``; ``parameters()`` leaves it out, so no trainer optimiser holds it.

What a method sees in ``forward(student, teacher, batch)``:

- ``student``: the student's output dict (``"out"``, and ``"aux"`` for PSPNet in training mode)
  merged with the tensors captured at ``student_taps`` (keys = the tap's local name).
- ``teacher``: the same for the teacher (``None`` when ``needs_teacher`` is False). Teacher
  tensors come from a frozen model run without gradients.
- ``batch``: the data batch: ``"image"`` B×3×H×W, ``"mask"`` (semantic: B×H×W int64 with
  ``ignore_index`` = ignore; binary: B×1×H×W float in {0, 1}).

Learnable parts (mapping layers, auxiliary heads, self-teacher networks) are built in
``setup()``, which receives the shape of every tap from one dry forward pass, so channel counts
never need to be written by hand. They are optimised with the student and never exported.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from segkd.distill.options import OlderNamesRead, current_options
from segkd.registry import Registry

METHODS: Registry[type[DistillMethod]] = Registry("distillation method")


def register_method(name: str):
    """Class decorator: register a ``DistillMethod`` subclass under ``name``."""

    def decorator(cls: type[DistillMethod]) -> type[DistillMethod]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


class DistillMethod(OlderNamesRead):
    """Base class. Subclasses set the class attributes and implement ``forward``.

    Class attributes:
        paper: citation shown by ``segkd methods``.
        kind: ``"teacher_student"`` or ``"self"``.
        task: ``"semantic"``, ``"binary"`` or ``"any"``.
        ignore_index: label of unsupervised pixels; the trainer sets it on every method from
            ``data.ignore_index`` (255, that key's default, only when a method is used alone).
        needs_teacher: whether a teacher model must be given in the config.
        student_taps / teacher_taps: defaults for ``{local_name: feature point or module path}``;
            instances may override them through the ``student_taps`` / ``teacher_taps``
            constructor arguments when the subclass accepts them.
        terms: ``{term: what it computes}`` for every loss term ``forward`` may return
            (listed by ``segkd methods``).
        renamed_options: ``{old name: current name}`` of options still accepted (and read as
            attributes) under an older name, with a ``FutureWarning`` (see ``segkd.distill.options``).
    """

    name: ClassVar[str] = ""
    ignore_index: int = 255
    paper: ClassVar[str] = ""
    kind: ClassVar[str] = "teacher_student"
    task: ClassVar[str] = "any"
    needs_teacher: ClassVar[bool] = True
    student_taps: dict[str, str] = {}
    teacher_taps: dict[str, str] = {}
    terms: ClassVar[dict[str, str]] = {}
    renamed_options: ClassVar[dict[str, str]] = {}

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Called once before ``setup`` with the models themselves (default: nothing).

        For methods that copy parts of the student (DHM's branches replicate the later stages).
        Never store the student as a sub-module (its parameters would count twice): deep-copy.
        """

    def setup(self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size] | None) -> None:
        """Build learnable parts once tap shapes are known (default: nothing to build)."""

    def forward(self, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def head_logits(self, student: Mapping[str, torch.Tensor], size: torch.Size) -> dict[str, torch.Tensor]:
        """Logits at ``size`` of the method's own prediction heads, by name (``segkd eval --heads``)."""
        return {}

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """``nn.Module``'s, without the parameters of sub-modules that step themselves."""
        own = {id(p) for m in self.modules() if getattr(m, "steps_itself", False) for p in m.parameters()}
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            if id(p) not in own:
                yield name, p

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``: which learning rate each parameter trains at.

        Default: every parameter in ``"head"`` (new layers). DHM puts its copies of pretrained
        backbone stages in ``"backbone"``, so they train at the rate of the stages they copy.
        """
        return {"backbone": [], "head": list(self.parameters())}

    def set_progress(self, progress: float) -> None:
        """Called by the trainer every step with the fraction of training done (0..1).

        Methods with ramp-ups or late starts (FRSKD, SAD) override this.
        """

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Constructor keyword arguments and their default values (for ``segkd methods``)."""
        sig = inspect.signature(cls.__init__)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty
        }


def build_method(spec: Mapping[str, Any]) -> DistillMethod:
    """Build a method from its config entry ``{"name": ..., **hyper_parameters}``.

    Unknown hyper-parameters are an error that names them, so a typo never passes silently;
    an option's older name is accepted with a ``FutureWarning`` naming the current one.
    """
    spec = dict(spec)
    name = spec.pop("name")
    cls = METHODS.get(name)
    spec = current_options(name, spec, cls.renamed_options)
    allowed = cls.defaults()
    sig = inspect.signature(cls.__init__)
    required = [
        k for k, p in sig.parameters.items()
        if k != "self" and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    unknown = sorted(set(spec) - set(allowed) - set(required))
    if unknown:
        raise ValueError(
            f"method '{name}' has no option(s) {unknown}; its options are {sorted(allowed)}"
        )
    return cls(**spec)
