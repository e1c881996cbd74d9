"""``Distiller``: distillation inside any training loop, and the loss step of ``segkd train``."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segkd.distill import METHODS, DistillMethod, FeatureTaps, build_method
from segkd.engine.builders import method_param_groups, prepare_methods
from segkd.engine.teacher import LiveTeacher, TeacherSource
from segkd.models.outputs import model_outputs

MethodSpec = str | Mapping[str, Any] | DistillMethod


class _Batch(dict):
    """The batch the methods read; reading the targets of a call given none says what to pass."""

    def __missing__(self, key: str) -> Any:
        if key == "mask":
            raise ValueError("a distillation method reads the targets (labels or masks) of the batch: "
                             "call distiller(output, images, targets)")
        raise KeyError(key)


def _one_method(spec: MethodSpec) -> DistillMethod:
    if isinstance(spec, DistillMethod):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise TypeError(f"a method is a name, a dict with 'name' and its options, or a DistillMethod; got {spec!r}")
    try:
        return build_method(spec)
    except KeyError as err:  # the registry's message, without KeyError's quotes
        raise ValueError(err.args[0]) from None


def _methods(specs: Sequence[MethodSpec] | nn.ModuleList) -> nn.ModuleList:
    if isinstance(specs, (str, Mapping, DistillMethod)):
        specs = [specs]
    methods = specs if isinstance(specs, nn.ModuleList) else nn.ModuleList(_one_method(s) for s in specs)
    seen: dict[str, int] = {}
    # a method listed twice (cwd at two layers) gets its own term names (cwd, cwd_2), so that its
    # terms add to the first one's instead of replacing them in the dict of losses
    for method in methods:
        seen[method.name] = seen.get(method.name, 0) + 1
        if seen[method.name] > 1 and method.name == type(method).name:
            method.name = f"{method.name}_{seen[method.name]}"
    return methods


class Distiller(nn.Module):
    """Distillation terms for any training loop: the user's forward and task loss stay theirs.

    Args:
        student: the model being trained (any ``nn.Module``; a ``DistributedDataParallel`` is
            unwrapped). Its forward may return a tensor, a tuple, a dict / ``OrderedDict``
            (torchvision) or an object with ``.logits`` (Hugging Face).
        teacher: the trained model to distil from, or None for self-distillation. It is frozen
            (eval mode, no gradients) and run once per call under ``torch.inference_mode``
            (never, when no method reads a teacher).
        methods: names (``"logits_kd"``) or dicts of a name and options (``{"name": "cwd",
            "temperature": 4.0}``), or built methods; ``segkd methods`` lists them all.
        ignore_index: label value of unlabelled pixels, skipped by the methods' losses.
        example: a batch of images (B×3×H×W, B >= 2) to build the methods' learnable parts from.
            Without it they are built on the student's first forward pass: then build the
            optimiser after that pass, since ``parameters()`` is empty before it.
        student_points / teacher_points: ``{alias: module path}`` added to a model's feature
            points, so that methods tapping an alias (CWD's ``"logits"``) find it in a model of
            your own; any tap may also be a module path (``"backbone.layer3"``).
        align_corners: how outputs at another resolution than the input are upsampled.

    Calling ``distiller(output, images, targets)`` after the student's forward pass returns
    ``{"method/term": weighted loss}`` (float32); add them to the task loss. ``images`` may also be
    a batch dict with ``"image"`` (and ``"mask"``). Under DDP call ``average_gradients()`` after
    ``backward()``; with schedules, ``set_progress(step / steps)`` each step; ``close()`` (or the
    ``with`` block's end) removes every hook.

    Example:
        >>> distiller = segkd.Distiller(student, teacher, methods=["logits_kd", {"name": "cwd", "temperature": 4.0}],
        ...                             example=images)
        >>> optimizer = torch.optim.SGD([*student.parameters(), *distiller.parameters()], lr=0.01)
        >>> out = student(images)
        >>> terms = distiller(out, images, masks)           # {"logits_kd/kd": ..., "cwd/cwd": ...}
        >>> loss = F.cross_entropy(out["out"], masks, ignore_index=255) + sum(terms.values())
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        methods: Sequence[MethodSpec] | nn.ModuleList = (),
        *,
        ignore_index: int = 255,
        example: torch.Tensor | None = None,
        student_points: Mapping[str, str] | None = None,
        teacher_points: Mapping[str, str] | None = None,
        align_corners: bool = False,
    ) -> None:
        """See the class docstring; given ``example``, the methods' parts are built here."""
        super().__init__()
        if isinstance(student, DistributedDataParallel):
            student = student.module
        for role, model in (("student", student), ("teacher", teacher)):
            if model is not None and not isinstance(model, nn.Module):
                raise TypeError(f"{role} must be an nn.Module, got {type(model).__name__}")
        self.methods = _methods(methods)
        for method in self.methods:
            method.ignore_index = ignore_index
        wanting = [m.name for m in self.methods if m.needs_teacher]
        if wanting and teacher is None:
            self_methods = [n for n in METHODS.names() if not METHODS.get(n).needs_teacher]
            raise ValueError(f"method(s) {wanting} distil from a teacher but none was given: pass teacher=<a trained "
                             f"model>, or use a self-distillation method ({', '.join(self_methods)})")
        # plain attributes, not sub-modules: neither model belongs to the distiller's parameters or state
        self.__dict__["student"] = student
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False) if teacher is not None and wanting else None
        self.align_corners = align_corners
        self.student_taps: dict[str, str] = {}
        self.teacher_taps: dict[str, str] = {}
        self._student_hooks: FeatureTaps | None = None
        self._source: TeacherSource | None = None
        self._restore_points: list[tuple[nn.Module, Any]] = []
        self._lazy_hook: Any = None
        self._optimiser_asked_early = False
        self._closed = False
        for model, points in ((student, student_points), (self.teacher, teacher_points)):
            if model is not None and points:
                self._restore_points.append((model, model.__dict__.get("feature_points")))
                model.feature_points = {**getattr(model, "feature_points", {}), **points}
        if example is not None:
            self.prepare(example)
        else:
            self._lazy_hook = student.register_forward_pre_hook(self._prepare_on_first_call)

    # ------------------------------------------------------------------ set-up

    @property
    def prepared(self) -> bool:
        """Whether the methods' parts are built and the hooks installed."""
        return self._student_hooks is not None

    def prepare(self, example: torch.Tensor) -> None:
        """Build the methods' parts from one probe with ``example`` (B×3×H×W) and install the taps.

        Called by the constructor given ``example``, else on the student's first forward pass.
        """
        if self.prepared:
            raise RuntimeError("this Distiller is prepared already")
        if not isinstance(example, torch.Tensor) or example.dim() != 4:
            shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
            raise ValueError(f"example must be a batch of images B×3×H×W, got {shape}")
        try:
            self.student_taps, self.teacher_taps = prepare_methods(self.methods, self.student, self.teacher, example)
            self.methods.to(example.device)
            self._student_hooks = FeatureTaps(self.student, self.student_taps)
            self._source = LiveTeacher(self.teacher, self.teacher_taps) if self.teacher is not None else None
        except KeyError as err:  # a tap path the model lacks: FeatureTaps names the closest module paths
            self.close()
            raise ValueError(err.args[0]) from None
        except Exception:
            self.close()
            raise

    def _prepare_on_first_call(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._lazy_hook is None:
            return
        self._lazy_hook.remove()  # first: the probe's own forward pass must not come back here
        self._lazy_hook = None
        images = args[0] if args else None
        with torch.inference_mode(False), torch.enable_grad():
            self.prepare(images.clone() if isinstance(images, torch.Tensor) else images)
        if self._optimiser_asked_early and any(True for _ in self.methods.parameters()):
            raise RuntimeError("the optimiser was given distiller.parameters() before the methods' parts existed "
                               "(they are built on the student's first forward pass): pass example=<a batch of "
                               "images> to Distiller, or build the optimiser after the first forward pass")

    @property
    def teacher_source(self) -> TeacherSource | None:
        """Where the teacher's tensors come from: the live teacher, or e.g. a teacher cache."""
        return self._source

    @teacher_source.setter
    def teacher_source(self, source: TeacherSource | None) -> None:
        if self._source is not None and self._source is not source:
            self._source.close()
        self._source = source

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The methods' learnable parts (mapping layers, auxiliary heads): give them to the optimiser."""
        if not self.prepared:
            self._optimiser_asked_early = True
        return super().parameters(recurse)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``: the methods' parameters by the learning rate they
        train at; copies of pretrained stages (DHM, DKS) go with the backbone, new layers with the head.

        Example:
            >>> groups = distiller.param_groups()
            >>> optimizer = torch.optim.SGD([{"params": student.parameters()}, {"params": groups["head"]},
            ...                              {"params": groups["backbone"], "lr": 0.001}], lr=0.01)
        """
        if not self.prepared:
            self._optimiser_asked_early = True
        return method_param_groups(self.methods)

    def set_progress(self, fraction: float) -> None:
        """The fraction of training done (0..1), for methods with ramps or late starts (FRSKD, SAD)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"set_progress: fraction must be within [0, 1], got {fraction}")
        for method in self.methods:
            method.set_progress(fraction)

    # ------------------------------------------------------------------ a step

    def forward(self, output: Any, images: torch.Tensor | Mapping[str, Any],
                targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"method/term": weighted loss}`` for the student's ``output`` on ``images`` (B×3×H×W).

        ``targets``: semantic B×H×W class indices, binary B×1×H×W in {0, 1}; methods that skip
        unlabelled pixels or supervise auxiliary heads read them. ``images`` may be the whole batch
        dict (``"image"``, ``"mask"``, and the cached teacher maps of a teacher cache).
        """
        batch = _Batch(images) if isinstance(images, Mapping) else _Batch(image=images)
        if targets is not None:
            batch["mask"] = targets
        image = batch.get("image")
        if not isinstance(image, torch.Tensor) or image.dim() != 4:
            found = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"images must be a batch B×3×H×W, got {found}")
        mask = batch.get("mask")
        if isinstance(mask, torch.Tensor) and mask.shape[0] != image.shape[0]:
            raise ValueError(f"images and targets hold different batch sizes: {image.shape[0]} images, "
                             f"{mask.shape[0]} targets")
        if self._closed:
            raise RuntimeError("this Distiller is closed: its hooks are removed; make a new one")
        if not self.prepared:  # the student never ran since the distiller was made
            raise RuntimeError("the student has not run yet: call distiller(output, images, targets) with the "
                               "output of student(images)")
        student = {**model_outputs(output, image.shape[-2:], align_corners=self.align_corners, who="the student"),
                   **self._student_hooks.pop()}
        silent = sorted(set(self.student_taps) - set(student))
        if silent:
            raise RuntimeError(f"the student's taps {silent} recorded nothing: pass the output of the student's "
                               "own forward pass in training mode, once per call")
        if self.teacher is not None and self.teacher.training:  # e.g. a LightningModule's .train() reached it
            self.teacher.eval()
        teacher = self._source(batch) if self._source is not None else None
        losses: dict[str, torch.Tensor] = {}
        for method in self.methods:
            for term, value in method(student, teacher, batch).items():
                losses[f"{method.name}/{term}"] = value.float()
        return losses

    def head_logits(self, output: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"method/head": logits}`` of the methods' own prediction heads (auxiliary branches, a
        self-teacher) for the student's ``output`` on ``images``, at the images' size, to score or show.
        Call after the student's forward pass; the pass's features stay for the loss call
        (``distiller(output, images, targets)``) that may follow."""
        if not self.prepared or self._closed:
            raise RuntimeError("head_logits needs a prepared, open Distiller: run the student first")
        size = images.shape[-2:]
        student = {**model_outputs(output, size, align_corners=self.align_corners, who="the student"),
                   **self._student_hooks.peek()}
        return {f"{m.name}/{head}": z for m in self.methods for head, z in m.head_logits(student, size).items()}

    def average_gradients(self) -> None:
        """Under DDP, average the methods' gradients over the processes (call after ``backward()``).

        The methods' parts live outside the student's ``DistributedDataParallel``, which
        averages only the student's gradients. Without a process group this does nothing.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world_size = dist.get_world_size()
        for param in self.methods.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(world_size)

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Remove every hook this distiller installed and the feature points it added."""
        self._closed = True
        if self._lazy_hook is not None:
            self._lazy_hook.remove()
            self._lazy_hook = None
        if self._student_hooks is not None:
            self._student_hooks.remove()
        if self._source is not None:
            self._source.close()
        for model, points in self._restore_points:
            if points is None:
                model.__dict__.pop("feature_points", None)
            else:
                model.feature_points = points
        self._restore_points = []

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def extra_repr(self) -> str:
        return f"student={type(self.student).__name__}, teacher={type(self.teacher).__name__}"
