"""Trainer: end-to-end runs, exact resume, NaN guard, checkpoint errors."""
from __future__ import annotations

import json

import pytest
import torch

from segkd.engine import trainer as trainer_module
from segkd.engine.checkpoint import CheckpointError, read_checkpoint
from segkd.engine.errors import NonFiniteLossError
from segkd.engine.run import evaluate_checkpoint, load_trained, predict_images
from segkd.engine.trainer import fit

from engine_helpers import tiny_binary_config, tiny_semantic_config


def test_binary_run_writes_outputs_and_scores(tmp_path):
    cfg = tiny_binary_config(tmp_path)
    report = fit(cfg)
    run = cfg.run_dir
    for name in ("config.yaml", "last.pt", "metrics.json", "history.jsonl"):
        assert (run / name).is_file(), name
    # no validation split: the test split must not pick a model, so there is no best.pt
    assert not (run / "best.pt").exists()
    assert report["best"] is None and report["selection"].startswith("last model")
    assert report["iterations"] == 4  # 8 samples / batch 4 × 2 epochs
    assert 0.0 <= report["student"]["MAE"] <= 1.0
    assert json.loads((run / "metrics.json").read_text())["student"]["MAE"] == report["student"]["MAE"]
    # TensorBoard holds the losses, the LR, the validation metrics and a few prediction images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    assert {"train/total", "train/lr", "val/MAE"} <= set(events.Tags()["scalars"])
    assert len(events.Tags()["images"]) == 4
    # the checkpoint's metrics are reproduced by a fresh evaluation of it
    again = evaluate_checkpoint(run / "last.pt")
    assert again["MAE"] == pytest.approx(report["student"]["MAE"], abs=1e-9)


def test_semantic_run_then_predict(tmp_path):
    cfg = tiny_semantic_config(tmp_path)
    report = fit(cfg)
    assert set(report["student"]) >= {"mIoU", "mAcc", "allAcc", "per_class"}
    images = cfg.data.root / "images"
    written = predict_images(cfg.run_dir / "best.pt", images if images.is_dir() else cfg.data.root, tmp_path / "pred")
    assert written and all(p.is_file() for p in written)
    assert (tmp_path / "pred" / "overlay" / f"{written[0].stem}.jpg").is_file()


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    fit(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg)


def _weights(path):
    return read_checkpoint(path)["model"]


@pytest.mark.parametrize("channels_last", [False, True])
def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, channels_last):
    train = {"checkpoint_every_iters": 1, "channels_last": channels_last}
    # uninterrupted: 2 epochs × 2 iterations
    straight = tiny_binary_config(tmp_path / "a", train=train)
    fit(straight)
    # killed after iteration 3 (mid-epoch 1), then resumed from the iteration-3 checkpoint
    killed = tiny_binary_config(tmp_path / "b", train=train)
    real_losses, calls = trainer_module.training_losses, {"n": 0}

    def dying_losses(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "training_losses", dying_losses)
    with pytest.raises(KeyboardInterrupt):
        fit(killed)
    assert read_checkpoint(killed.run_dir / "last.pt")["iteration"] == 3
    monkeypatch.setattr(trainer_module, "training_losses", real_losses)
    fit(killed, resume=True)
    a, b = _weights(straight.run_dir / "last.pt"), _weights(killed.run_dir / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_channels_last_trains_in_that_format_to_nearly_the_same_weights(tmp_path, monkeypatch):
    formats = []
    real_losses = trainer_module.training_losses

    def watching(cfg, model, distiller, batch, device):
        weights = [p for p in model.parameters() if p.dim() == 4]
        formats.append((batch["image"].is_contiguous(memory_format=torch.channels_last),
                        all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)))
        return real_losses(cfg, model, distiller, batch, device)

    monkeypatch.setattr(trainer_module, "training_losses", watching)
    fit(default := tiny_binary_config(tmp_path / "a"))
    assert formats and not any(image or weights for image, weights in formats)
    formats.clear()
    fit(last := tiny_binary_config(tmp_path / "b", train={"channels_last": True}))
    assert formats and all(image and weights for image, weights in formats)
    a, b = _weights(default.run_dir / "last.pt"), _weights(last.run_dir / "last.pt")
    for key in a:  # the same arithmetic in another order: equal to float32 rounding, not bit for bit
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-3, atol=1e-5), key
    # the methods' parts and the teacher too
    formats.clear()
    seen = {}

    def watching_parts(cfg, model, distiller, batch, device):
        for role, module in (("methods", distiller.methods), ("teacher", distiller.teacher)):
            seen[role] = all(p.is_contiguous(memory_format=torch.channels_last)
                             for p in module.parameters() if p.dim() == 4)
        return real_losses(cfg, model, distiller, batch, device)

    monkeypatch.setattr(trainer_module, "training_losses", watching_parts)
    teacher = {"model": {"name": "fusion", "backbone": "resnet18", "width": 8},
               "checkpoint": str(default.run_dir / "last.pt")}
    fit(tiny_binary_config(tmp_path / "c", train={"channels_last": True, "epochs": 1},
                           distill={"teacher": teacher, "methods": [{"name": "tfkd"}, {"name": "dks"}]}))
    assert seen == {"methods": True, "teacher": True}
    # the checkpoint loads into a model built in the default format (export, predict)
    assert evaluate_checkpoint(last.run_dir / "last.pt")["MAE"] == pytest.approx(
        json.loads((last.run_dir / "metrics.json").read_text())["student"]["MAE"], abs=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_binary_config(tmp_path, train={"checkpoint_every_iters": 1})
    real_losses, calls = trainer_module.training_losses, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = real_losses(*args, **kwargs)
        if calls["n"] == 3:
            losses["task"] = losses["task"] * float("nan")
        return losses

    monkeypatch.setattr(trainer_module, "training_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="iteration 2"):
        fit(cfg)
    ckpt = read_checkpoint(cfg.run_dir / "last.pt")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_wrong_checkpoint_for_model_is_a_clear_error(tmp_path):
    binary = tiny_binary_config(tmp_path / "bin", train={"epochs": 1})
    fit(binary)
    semantic_cfg = tiny_semantic_config(tmp_path / "sem")
    from segkd.config import save_config

    save_config(semantic_cfg, tmp_path / "semantic.yaml")
    with pytest.raises(CheckpointError, match="does not fit PSPNet") as err:
        load_trained(binary.run_dir / "last.pt", tmp_path / "semantic.yaml")
    assert "last.pt" in str(err.value) and "missing" in str(err.value)
