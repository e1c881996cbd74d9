"""Trainer reliability: resume only what was trained, honest checkpoints and history, no leftovers."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from segkd.data import DataError
from segkd.engine import builders
from segkd.engine import trainer as trainer_module
from segkd.engine.checkpoint import read_checkpoint
from segkd.engine.errors import DivergedWeightsError, NonFiniteLossError, TrainingInterrupted
from segkd.engine.resume import ResumeError, config_differences, state_problems
from segkd.engine.trainer import fit

from engine_helpers import tiny_binary_config


def _dies_at(monkeypatch, call: int, error: BaseException) -> None:
    real, calls = trainer_module.training_losses, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "training_losses", dying)


def test_resume_refuses_a_changed_config_and_keeps_config_yaml(tmp_path):
    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    fit(cfg)
    stored = (cfg.run_dir / "config.yaml").read_text()
    changed = tiny_binary_config(tmp_path, train={"epochs": 3}, optim={"lr": 0.5})
    with pytest.raises(ResumeError) as err:
        fit(changed, resume=True)
    message = str(err.value)
    assert "optim.lr: 0.01 → 0.5" in message and "train.epochs: 1 → 3" in message
    assert (cfg.run_dir / "config.yaml").read_text() == stored  # a refused resume writes nothing


def test_resume_allows_logging_changes_and_reports_a_finished_run(tmp_path):
    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    first = fit(cfg)
    again = fit(tiny_binary_config(tmp_path, train={"epochs": 1, "log_every": 5}, data={"num_workers": 0}),
                resume=True)
    assert again["iterations"] == first["iterations"] == 2
    assert again["student"]["MAE"] == pytest.approx(first["student"]["MAE"], abs=1e-9)  # not empty metrics
    assert yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["train"]["log_every"] == 5


def test_config_differences_ignore_only_result_neutral_keys():
    old = {"train": {"epochs": 2, "log_every": 1, "device": "cpu"}, "data": {"num_workers": 0, "root": "a"}}
    new = {"train": {"epochs": 2, "log_every": 9, "device": "cuda"}, "data": {"num_workers": 4, "root": "b"}}
    assert config_differences(old, new) == ['data.root: "a" → "b"']


def test_interrupt_names_the_iteration_and_resume_does_not_repeat_history(tmp_path, monkeypatch):
    cfg = tiny_binary_config(tmp_path, train={"checkpoint_every_iters": 2})
    _dies_at(monkeypatch, 4, KeyboardInterrupt())  # iterations 1-3 done, checkpoint at 2
    with pytest.raises(TrainingInterrupted) as err:
        fit(cfg)
    assert str(err.value).startswith("interrupted at iteration 3;")
    assert "from iteration 2 (finite weights)" in str(err.value) and str(err.value).endswith("continue with --resume")
    stale = cfg.run_dir / ".last.pt.999999999.0123abcd.tmp"  # left by a process killed mid-write
    stale.write_bytes(b"half a checkpoint")
    monkeypatch.undo()
    fit(cfg, resume=True)
    assert not stale.exists()
    lines = [json.loads(line) for line in (cfg.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if "train" in r] == [1, 2, 3, 4]


def test_feature_hooks_are_removed_when_training_fails(tmp_path, monkeypatch):
    cfg = tiny_binary_config(tmp_path, distill={"methods": [{"name": "byot"}]})
    built = {}
    real_build = builders.build_student

    def spy(cfg_):
        built["student"] = real_build(cfg_)
        return built["student"]

    monkeypatch.setattr(builders, "build_student", spy)
    _dies_at(monkeypatch, 2, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        fit(cfg)
    assert not any(m._forward_hooks for m in built["student"].modules())


def test_diverged_weights_are_not_checkpointed(tmp_path, monkeypatch):
    cfg = tiny_binary_config(tmp_path, train={"checkpoint_every_iters": 1})
    real, calls = trainer_module.training_losses, {"n": 0}

    def exploding(cfg_, model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the weights blow up while the loss of this step is still finite
            with torch.no_grad():
                next(model.parameters()).mul_(1e12)
        return real(cfg_, model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "training_losses", exploding)
    with pytest.raises(DivergedWeightsError, match="weights diverged at iteration 2: backbone.conv1.weight") as err:
        fit(cfg)
    assert isinstance(err.value, NonFiniteLossError)  # callers that catch the NaN stop catch this too
    assert "from iteration 1 (finite weights)" in str(err.value)
    ckpt = read_checkpoint(cfg.run_dir / "last.pt")
    assert ckpt["iteration"] == 1
    assert state_problems(ckpt["model"]) == []


def test_a_run_stored_by_an_older_version_still_resumes(tmp_path):
    from segkd.engine.checkpoint import atomic_save
    from segkd.engine.resume import check_resume

    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    fit(cfg)
    last = cfg.run_dir / "last.pt"
    ckpt = read_checkpoint(last)
    # older versions stored the unused semantic class list of a binary run, and lacked newer keys
    ckpt["config"]["data"].update(num_classes=4, class_names=["background", "circle", "rectangle", "triangle"])
    del ckpt["config"]["train"]["checkpoint_every_iters"], ckpt["config"]["eval"]["stride_rate"]
    atomic_save(ckpt, last)
    assert check_resume(cfg, last)["iteration"] == 2


def test_a_batch_larger_than_the_training_set_is_refused_before_training(tmp_path):
    cfg = tiny_binary_config(tmp_path, data={"batch_size": 16})  # 8 training images
    with pytest.raises(DataError, match=r"^data.batch_size: 16 exceeds the 8 training samples .*lower data.batch_size"):
        fit(cfg)
    assert not (cfg.run_dir / "last.pt").exists()
