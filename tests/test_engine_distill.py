"""Distillation through the trainer: frozen teacher, fit checks, the exported student."""
from __future__ import annotations

import pytest
import torch

from segkd.config import ConfigError
from segkd.engine import builders
from segkd.engine import trainer as trainer_module
from segkd.engine.checkpoint import read_checkpoint
from segkd.engine.trainer import fit

from engine_helpers import tiny_semantic_config


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = tiny_semantic_config(tmp, model={"name": "pspnet", "backbone": "resnet18", "head_channels": 64})
    fit(cfg)
    return cfg


def _distill_cfg(tmp, teacher_cfg, methods, **extra):
    return tiny_semantic_config(tmp, distill={
        "teacher": {"model": teacher_cfg.model.model_dump(), "checkpoint": str(teacher_cfg.run_dir / "last.pt")},
        "methods": methods,
    }, **extra)


def test_distilled_student_checkpoint_holds_exactly_the_plain_student(tmp_path, teacher_run, monkeypatch):
    methods = [{"name": "logits_kd", "temperature": 2.0},
               {"name": "feature_kd", "student_at": "head", "teacher_at": "head", "mapping": "conv_bn"}]
    cfg = _distill_cfg(tmp_path, teacher_run, methods)
    seen = {}
    real = trainer_module.training_losses

    def spy(cfg_, model, distiller, *args, **kwargs):
        losses = real(cfg_, model, distiller, *args, **kwargs)
        seen["teacher"], seen["methods"] = distiller.teacher, distiller.methods
        return losses

    monkeypatch.setattr(trainer_module, "training_losses", spy)
    report = fit(cfg)
    # the teacher is frozen, in eval mode, and never gets a gradient
    teacher = seen["teacher"]
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    # the learned mapping exists in the method, and trained
    assert sum(p.numel() for p in seen["methods"].parameters()) > 0
    # the checkpoint's model is exactly the plain student: same keys, same shapes, no mapping layers
    plain = builders.build_student(cfg).state_dict()
    saved = read_checkpoint(cfg.run_dir / "last.pt")["model"]
    assert saved.keys() == plain.keys()
    assert all(saved[k].shape == plain[k].shape for k in plain)
    assert "teacher" in report and "mIoU" in report["teacher"]


def test_teacher_with_other_class_count_is_refused_before_training(tmp_path, teacher_run, monkeypatch):
    cfg = _distill_cfg(tmp_path, teacher_run, [{"name": "logits_kd"}])
    raw = cfg.to_dict()
    raw["distill"]["teacher"]["model"]["num_classes"] = 5  # the teacher's checkpoint has 3
    from segkd.config import validate

    with pytest.raises(Exception, match="does not fit|differ"):
        fit(validate(raw))
    calls = []
    monkeypatch.setattr(trainer_module, "training_losses", lambda *a, **k: calls.append(1))
    student_4 = tiny_semantic_config(tmp_path / "b", data={"synthetic": {"num_classes": 4}}, distill={
        "teacher": {"model": teacher_run.model.model_dump() | {"num_classes": 3},
                    "checkpoint": str(teacher_run.run_dir / "last.pt")},
        "methods": [{"name": "logits_kd"}]})
    with pytest.raises(ValueError, match="teacher and student outputs differ"):
        fit(student_4)
    assert not calls  # nothing was trained


def test_missing_teacher_checkpoint_names_the_key_and_file(tmp_path):
    cfg = tiny_semantic_config(tmp_path, distill={
        "teacher": {"model": {"name": "pspnet", "backbone": "resnet18"}, "checkpoint": str(tmp_path / "no.pt")},
        "methods": [{"name": "logits_kd"}]})
    with pytest.raises(ConfigError, match=r"distill\.teacher\.checkpoint.*no\.pt"):
        fit(cfg)


def test_plain_state_dict_teacher_with_key_map(tmp_path, teacher_run):
    state = read_checkpoint(teacher_run.run_dir / "last.pt")["model"]
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "foreign.pth")
    cfg = tiny_semantic_config(tmp_path, train={"max_iters": 1}, distill={
        "teacher": {"model": teacher_run.model.model_dump(), "checkpoint": str(tmp_path / "foreign.pth"),
                    "key_map": {"module.": ""}},
        "methods": [{"name": "logits_kd"}]})
    report = fit(cfg)
    assert report["iterations"] == 1


def test_teacher_tap_on_a_branch_skipped_in_eval_mode_is_named_before_training():
    from torch import nn

    from segkd.distill import build_method
    from segkd.models import build_model

    student = build_model("pspnet", backbone="resnet18", num_classes=3, output_stride=8)
    teacher = build_model("pspnet", backbone="resnet18", num_classes=3, output_stride=8).eval()
    methods = nn.ModuleList([build_method({"name": "feature_kd", "at": "aux_feat"})])
    with pytest.raises(ValueError, match=r"teacher \(PSPNet\).*aux_head.*eval mode"):
        builders.prepare_methods(methods, student, teacher, torch.randn(2, 3, 32, 32))
    dist_with_aux = nn.ModuleList([build_method({"name": "dist", "aux_weight": 0.4})])
    with pytest.raises(ValueError, match=r"teacher \(PSPNet\).*aux_classifier"):
        builders.prepare_methods(dist_with_aux, student, teacher, torch.randn(2, 3, 32, 32))
    # the default place exists in both modes
    methods = nn.ModuleList([build_method({"name": "feature_kd"})])
    builders.prepare_methods(methods, student, teacher, torch.randn(2, 3, 32, 32))
    assert methods[0].mapping is None  # same backbone: channels match, no mapping
