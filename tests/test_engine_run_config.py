"""``segkd eval --config``: a config naming no registered model or method is refused before anything loads."""
from __future__ import annotations

import pytest

from segkd.config import ConfigError, save_config
from segkd.engine.run import load_trained

from engine_helpers import tiny_binary_config


@pytest.mark.parametrize(("override", "blamed"), [
    ("model.name=nosuch", "unknown model 'nosuch'"),
    ("distill.methods=[{name: nosuch}]", "unknown distillation method 'nosuch'"),
])
def test_eval_with_a_config_checks_its_model_and_methods_before_reading_the_checkpoint(tmp_path, override, blamed):
    save_config(tiny_binary_config(tmp_path), tmp_path / "run.yaml")
    missing = tmp_path / "absent.pt"  # never read: the config is refused first
    with pytest.raises(ConfigError) as err:
        load_trained(missing, tmp_path / "run.yaml", [override])
    assert str(err.value).startswith(f"--set {override}: ") and blamed in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("override", "blamed"), [
    ("distill.teacher.model.name=nosuch", "unknown model 'nosuch'"),
    ("distill.teacher.model.bogus=1", "has no option(s) ['bogus']"),
    ("distill.teacher.model.backbone=resnet999", "unknown backbone 'resnet999'"),
])
def test_a_teachers_model_is_checked_at_load_like_the_students(override, blamed):
    from segkd.engine.checks import load_run_config

    with pytest.raises(ConfigError) as err:  # not when the run first builds its teacher, after others trained
        load_run_config("kd_pspnet50_to_18_voc", [override])
    assert str(err.value).startswith(f"--set {override}: ") and blamed in str(err.value)
    assert "\n" not in str(err.value)
