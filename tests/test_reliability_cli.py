"""Every error a user can cause ends in a short message and a non-zero exit; --debug shows more."""
from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.cli import main
from segkd.config import save_config
from segkd.engine import checkpoint as checkpoint_module
from segkd.engine import trainer as trainer_module

from engine_helpers import tiny_binary_config


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "run.yaml"
    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), path)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("segkd ")
    return err


@pytest.mark.parametrize("override, expected, listed", [
    ("model.name=fuson", "--set model.name=fuson: unknown model 'fuson'; available: ", "fusion"),
    ("model.backbone=resnet19", "--set model.backbone=resnet19: unknown backbone 'resnet19'", None),
    ("distill.methods=[{name: sadd}]", "unknown distillation method 'sadd'; available: ", "sad"),
    ("train.epochs=[1,", "--set train.epochs=[1,: '[1,' is not a valid YAML value", None),
    ("data.train_split=no", "YAML reads no as the boolean False", None),
    ("train.epochz=2", "--set train.epochz=2: unknown key", None),
])
def test_config_mistakes_are_one_line_blaming_the_set_argument(config, capsys, override, expected, listed):
    assert main(["check-data", str(config), "--set", override]) == 1
    err = _error(capsys)
    assert expected in err
    if listed is not None:  # the list of choices names the one the user meant
        assert listed in err.split("available: ", 1)[1].strip().split(", ")
    assert err.split(": error: ", 1)[1].startswith("--set ")  # blamed on the argument, not the file


def test_pretrained_file_that_does_not_fit(config, tmp_path, capsys):
    torch.save({"conv1.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "w.pt")
    assert main(["train", str(config), "--set", f"model.pretrained={tmp_path / 'w.pt'}"]) == 1
    assert "error: model: weights file" in _error(capsys)


def test_nan_stop_and_ctrl_c_are_messages(config, monkeypatch, capsys):
    real = trainer_module.training_losses

    def nan_losses(*args, **kwargs):
        losses = real(*args, **kwargs)
        return {k: v * float("nan") for k, v in losses.items()}

    monkeypatch.setattr(trainer_module, "training_losses", nan_losses)
    assert main(["train", str(config)]) == 1
    assert "loss is nan at iteration 0" in _error(capsys)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "training_losses", interrupted)
    assert main(["train", str(config), "--set", f"output_dir={config.parent / 'run2'}"]) == 130
    err = _error(capsys)
    assert "interrupted at iteration 0;" in err and "continue with --resume" in err


def test_full_disk_and_read_only_output(config, monkeypatch, capsys):
    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(checkpoint_module, "atomic_torch_save", full)
    assert main(["train", str(config)]) == 1
    err = _error(capsys)
    assert "error: no space left on " in err and "while writing " in err and err.rstrip().endswith(
        "last.pt; free some space or choose another output_dir")

    def read_only(cfg, path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(trainer_module, "save_config", read_only)
    assert main(["train", str(config), "--set", f"output_dir={config.parent / 'run3'}"]) == 1
    assert "config.yaml: read-only file system; choose another output_dir" in _error(capsys)


def test_debug_shows_the_traceback(config, monkeypatch, capsys):
    with pytest.raises(Exception, match="unknown model"):
        main(["check-data", str(config), "--set", "model.name=x", "--debug"])
    monkeypatch.setenv("SEGKD_DEBUG", "1")
    with pytest.raises(Exception, match="unknown model"):
        main(["check-data", str(config), "--set", "model.name=x"])


def test_benchmark_missing_file_and_unknown_name(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nosuchfile.pt")]) == 1
    assert "nosuchfile.pt: no such checkpoint file" in _error(capsys)
    assert main(["benchmark", "pspnet7"]) == 2
    assert "'pspnet7' is neither a checkpoint file nor a registered model" in _error(capsys)


def test_eval_options_that_exclude_each_other_and_bad_label_values(tmp_path, capsys):
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "pred" / "a.png")
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--checkpoint", "x.pt"]) == 2
    assert "cannot be combined" in _error(capsys)
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--num-classes", "3"]) == 1
    assert "pred/a.png" in _error(capsys)
    assert main(["compare", "demo_semantic", "--report", "--retrain"]) == 2
    assert "--report trains nothing and --retrain trains again: give one of them" in _error(capsys)
    assert main(["compare", "demo_semantic", "--report", "--only", "student"]) == 2
    assert "--report trains nothing and --only says what to train: give one of them" in _error(capsys)


def test_predict_skips_unreadable_files_and_fails_at_the_end(config, tmp_path, capsys):
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "model, final iteration, on split 'test'" in out and "student" not in out
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(photos / "good.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="broken.jpg"):
        code = main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--input", str(photos),
                     "--output", str(tmp_path / "pred")])
    assert code == 1
    assert (tmp_path / "pred" / "good.png").is_file()
    captured = capsys.readouterr()
    assert "wrote 1 prediction(s)" in captured.out
    assert "skipped 2 file(s)" in captured.err and "notes.txt: not an image file" in captured.err


def test_config_show_lists_every_key_with_type_default_and_help(capsys):
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("train.max_iters "))
    assert row.split()[1:5] == ["int", "|", "None", "None"] and "stop after this many iterations" in row
    assert all(f"{section}." in out for section in ("data", "optim", "schedule", "train", "eval", "loss"))
    assert main(["config", "keys", "tiny_binary", "--set", "train.epochs=3"]) == 0
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert shown["train.epochs"].split()[2] == "3"
    assert "(not used by this task)" in shown["data.num_classes"]  # a binary run has no class list


def test_binary_run_config_has_no_semantic_class_list(tmp_path):
    import yaml

    cfg = tiny_binary_config(tmp_path)
    data = cfg.to_dict()["data"]
    assert "num_classes" not in data and "class_names" not in data
    from segkd.config import validate

    assert validate(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))).to_dict() == cfg.to_dict()  # reloads


def test_onnx_file_records_normalisation_and_output_meaning(tmp_path):
    import onnxruntime

    from segkd.commands.export import export_onnx, onnx_metadata
    from segkd.engine.builders import build_student

    cfg = tiny_binary_config(tmp_path)
    export_onnx(build_student(cfg), tmp_path / "m.onnx", input_size=(32, 32), metadata=onnx_metadata(cfg))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["segkd.task"] == "binary"
    assert meta["input.mean_rgb_0_255"] == "124.55,118.9,102.94"  # F3Net's statistics, the binary default
    assert "sigmoid(out)" in meta["output"]
    assert session.get_outputs()[0].shape == ["batch", 1, "height", "width"]


def test_a_failed_config_write_names_the_file(tmp_path, monkeypatch):
    from pathlib import Path

    from segkd.config import save_config as save

    def full(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as err:
        save(tiny_binary_config(tmp_path), tmp_path / "out" / "config.yaml")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "out" / "config.yaml")
