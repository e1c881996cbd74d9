"""Build the pieces of a run from a validated config: models, teacher, methods, optimiser."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.config import Config, ConfigError, ModelConfig, TeacherConfig
from segkd.distill import DistillMethod, FeatureTaps, build_method
from segkd.distill.hooks import resolve_path
from segkd.engine.checkpoint import load_model_state, read_checkpoint, remap_keys
from segkd.models import MODELS, build_model
from segkd.models.outputs import model_outputs


def model_kwargs(model_cfg: ModelConfig, cfg: Config) -> dict[str, Any]:
    """Builder kwargs; a semantic model's class count defaults to the data set's."""
    kwargs = model_cfg.kwargs
    params = inspect.signature(MODELS.get(model_cfg.name)).parameters
    if cfg.task == "semantic" and "num_classes" in params and "num_classes" not in kwargs:
        kwargs["num_classes"] = cfg.data.num_classes
    return kwargs


def build_student(cfg: Config) -> nn.Module:
    return build_model(cfg.model.name, **model_kwargs(cfg.model, cfg))


def build_teacher(teacher_cfg: TeacherConfig, cfg: Config, device: torch.device) -> nn.Module:
    """The frozen teacher: built, loaded from its checkpoint, in eval mode, no gradients."""
    kwargs = model_kwargs(teacher_cfg.model, cfg)
    kwargs.pop("pretrained", None)  # the checkpoint holds every weight
    teacher = build_model(teacher_cfg.model.name, **kwargs)
    if not Path(teacher_cfg.checkpoint).is_file():
        raise ConfigError(
            f"distill.teacher.checkpoint: file {teacher_cfg.checkpoint} not found (train the teacher first)"
        )
    ckpt = read_checkpoint(teacher_cfg.checkpoint)
    load_model_state(teacher, remap_keys(ckpt["model"], teacher_cfg.key_map), teacher_cfg.checkpoint)
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def build_methods(cfg: Config) -> nn.ModuleList:
    """The configured methods, each told the data's ignore label (no method keeps its own).

    A method listed more than once is named apart (``cwd``, ``cwd_2``) by ``segkd.Distiller``,
    which every training run goes through.
    """
    methods = nn.ModuleList(build_method(spec) for spec in cfg.distill.methods)
    for method in methods:
        method.ignore_index = cfg.data.ignore_index
    return methods


def merged_taps(methods: nn.ModuleList, side: str) -> dict[str, str]:
    """Union of the methods' taps on ``side`` ("student" or "teacher"); a clash is an error."""
    taps: dict[str, str] = {}
    for method in methods:
        for name, path in getattr(method, f"{side}_taps").items():
            if taps.get(name, path) != path:
                raise ValueError(
                    f"{side} tap '{name}' means '{taps[name]}' for one method and '{path}' for "
                    f"'{method.name}'; give the taps distinct names"
                )
            taps[name] = path
    return taps


@torch.no_grad()
def probe(model: nn.Module, taps: dict[str, str], example: torch.Tensor, train_mode: bool,
          role: str = "model") -> dict[str, torch.Tensor]:
    """One dry forward pass returning outputs and tapped tensors, leaving the model untouched.

    A tapped module that the forward pass never reaches is an error here, not a missing key
    deep inside a method's loss later.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train(train_mode)
    try:
        with FeatureTaps(model, taps) as hooks:  # hooks go even if the forward pass fails
            outputs = model_outputs(model(example), example.shape[-2:], who=f"{role} ({type(model).__name__})")
            captured = hooks.pop()
    finally:
        model.train(was_training)
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    silent = {name: resolve_path(model, spec) for name, spec in taps.items() if name not in captured}
    if silent:
        mode = "training" if train_mode else "eval"
        raise ValueError(
            f"{role} ({type(model).__name__}): tapped module(s) {silent} did not run in a forward pass in "
            f"{mode} mode. A frozen teacher runs in eval mode, where PSPNet skips its aux head: tap the teacher's "
            "'out', 'head', 'ppm' or a backbone stage instead"
        )
    outputs.update(captured)
    return outputs


def prepare_methods(
    methods: nn.ModuleList,
    student: nn.Module,
    teacher: nn.Module | None,
    example: torch.Tensor,
) -> tuple[dict[str, str], dict[str, str]]:
    """Bind methods, build their learnable parts from probed shapes, check teacher/student fit.

    Methods are bound first: a method may settle its taps on the models it is given.
    Returns the student and teacher taps to install during training.
    """
    for method in methods:
        method.bind(student, teacher)
    student_taps = merged_taps(methods, "student")
    teacher_taps = merged_taps(methods, "teacher") if teacher is not None else {}
    s = probe(student, student_taps, example, train_mode=True, role="student")
    t = probe(teacher, teacher_taps, example, train_mode=False, role="teacher") if teacher is not None else None
    if t is not None and s["out"].shape != t["out"].shape:
        raise ValueError(
            f"teacher and student outputs differ: student {tuple(s['out'].shape)} vs teacher "
            f"{tuple(t['out'].shape)} (B×classes×H×W); they must predict the same classes at the same size"
        )
    for method in methods:
        method.setup(
            {k: v.shape for k, v in s.items()},
            {k: v.shape for k, v in t.items()} if t is not None else None,
        )
    return student_taps, teacher_taps


def method_param_groups(methods: nn.ModuleList) -> dict[str, list[nn.Parameter]]:
    """``{"backbone": [...], "head": [...]}``: the methods' parameters by the LR group each declares."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
    for method in methods:
        declared = method.param_groups()
        unknown = sorted(set(declared) - set(groups))
        if unknown:
            raise ValueError(f"method '{method.name}': param_groups() returned unknown group(s) {unknown}; "
                             "use 'backbone' and 'head'")
        placed = [id(p) for params in declared.values() for p in params]
        if sorted(placed) != sorted(id(p) for p in method.parameters()):
            raise ValueError(f"method '{method.name}': param_groups() must list each of its parameters once")
        for name, params in declared.items():
            groups[name] += params
    return groups


def build_optimizer(cfg: Config, student: nn.Module, methods: nn.ModuleList) -> torch.optim.Optimizer:
    """SGD with separate LRs for the backbone and the head.

    A method's parameters train at the head's LR unless the method puts them elsewhere through
    ``param_groups()`` (DHM's copies of pretrained stages train at the backbone's LR).
    """
    o = cfg.optim
    if hasattr(student, "param_groups"):
        groups = student.param_groups()
    else:
        groups = {"backbone": [], "head": list(student.parameters())}
    declared = method_param_groups(methods)
    backbone = list(groups["backbone"]) + declared["backbone"]
    head = list(groups["head"]) + declared["head"]
    param_groups = [
        {"params": backbone, "lr": o.lr * o.backbone_lr_mult, "name": "backbone"},
        {"params": head, "lr": o.lr * o.head_lr_mult, "name": "head"},
    ]
    param_groups = [g for g in param_groups if g["params"]]
    for g in param_groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.SGD(
        param_groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
    )


def needs_teacher(methods: nn.ModuleList) -> bool:
    return any(m.needs_teacher for m in methods)


__all__ = [
    "DistillMethod",
    "build_methods",
    "build_optimizer",
    "build_student",
    "build_teacher",
    "method_param_groups",
    "needs_teacher",
    "prepare_methods",
    "probe",
]
