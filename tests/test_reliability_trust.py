"""Opening a file never runs code the user did not ask for: checkpoints load with weights_only,
and a stored config's ``name: import`` is refused unless the user trusts the file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from segkd.cli import main
from segkd.config import save_config
from segkd.engine import checkpoint as checkpoint_module
from segkd.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint
from segkd.engine.trainer import fit

from engine_helpers import tiny_binary_config, tiny_semantic_config


class _TouchOnLoad:
    """What a crafted checkpoint carries: unpickling it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


@pytest.fixture(autouse=True)
def _untrusted(monkeypatch):
    monkeypatch.delenv("SEGKD_TRUST_CHECKPOINT", raising=False)
    monkeypatch.setitem(checkpoint_module._trust, "enabled", False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    cfg = tiny_binary_config(tmp, train={"epochs": 1})
    fit(cfg)
    return cfg


def _crafted(tmp_path, trained, name="crafted.pt"):
    marker = tmp_path / "code_ran"
    ckpt = torch.load(trained.run_dir / "last.pt", weights_only=True)
    ckpt["payload"] = _TouchOnLoad(str(marker))
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name, marker


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_segkd_checkpoints_hold_only_what_weights_only_loads(trained):
    ckpt = torch.load(trained.run_dir / "last.pt", weights_only=True)  # raises on anything else
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["iteration"] > 0
    assert isinstance(ckpt["rng"]["numpy"]["keys"], torch.Tensor)


def test_checkpoints_of_the_previous_format_still_load(trained, tmp_path):
    ckpt = torch.load(trained.run_dir / "last.pt", weights_only=True)
    ckpt["rng"]["numpy"] = np.random.get_state()  # an array, as segkd 0.1 wrote it
    torch.save(ckpt, tmp_path / "old.pt")
    assert read_checkpoint(tmp_path / "old.pt")["rng"]["numpy"][0] == "MT19937"


@pytest.mark.parametrize("command", ["eval", "predict", "export", "benchmark"])
def test_a_crafted_checkpoint_runs_nothing(trained, tmp_path, capsys, command):
    path, marker = _crafted(tmp_path, trained)
    images = trained.data.root / "Image"
    argv = {"eval": ["eval", "--checkpoint", str(path)],
            "predict": ["predict", "--checkpoint", str(path), "--input", str(images), "--output", str(tmp_path / "p")],
            "export": ["export", str(path), "--output", str(tmp_path / "m.onnx")],
            "benchmark": ["benchmark", str(path), "--sizes", "32", "--iters", "1"]}[command]
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert str(path) in err and "os.makedirs" in err and "--trust-checkpoint" in err
    assert not marker.exists()


def test_a_crafted_teacher_checkpoint_runs_nothing(tmp_path, capsys):
    teacher_cfg = tiny_semantic_config(tmp_path / "t")
    fit(teacher_cfg)
    path, marker = _crafted(tmp_path, teacher_cfg, "teacher.pt")
    student = tiny_semantic_config(tmp_path / "s", distill={
        "teacher": {"model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
                    "checkpoint": str(path)},
        "methods": [{"name": "logits_kd"}]})
    save_config(student, tmp_path / "kd.yaml")
    assert main(["train", str(tmp_path / "kd.yaml")]) == 1
    assert "--trust-checkpoint" in _one_line_error(capsys)
    assert not marker.exists()


def test_trusting_a_checkpoint_is_explicit(trained, tmp_path, capsys):
    path, marker = _crafted(tmp_path, trained)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()
    assert main(["eval", "--checkpoint", str(path), "--trust-checkpoint"]) == 0
    assert marker.exists()  # the user asked for it


def test_a_stored_config_that_imports_code_is_refused(trained, tmp_path, capsys):
    marker = tmp_path / "imported_code_ran"
    ckpt = torch.load(trained.run_dir / "last.pt", weights_only=True)
    ckpt["config"]["model"] = {"name": "import", "target": "os:makedirs", "kwargs": {"name": str(marker)}}
    torch.save(ckpt, tmp_path / "import.pt")
    for command in (["eval", "--checkpoint"], ["export"]):
        assert main([*command, str(tmp_path / "import.pt")]) == 1
        err = _one_line_error(capsys)
        assert "'os:makedirs'" in err and "--trust-checkpoint" in err
    assert not marker.exists()
    # trusted, the import runs (and then fails: os.makedirs returns no network)
    assert main(["eval", "--checkpoint", str(tmp_path / "import.pt"), "--trust-checkpoint"]) == 1
    assert marker.exists()


def test_a_file_that_is_no_checkpoint_is_not_called_unsafe(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file \\(corrupt, truncated or another format\\)"):
        read_checkpoint(tmp_path / "notes.pt")

