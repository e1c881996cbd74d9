"""The command line: help with examples, check-data, eval on folders, methods, errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from segkd.cli import COMMANDS, main


def test_every_command_has_help_with_examples(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_check_data_reports_every_problem(tmp_path, shared_data, capsys):
    root = tmp_path / "sod"
    shutil.copytree(shared_data / "sod300", root)
    names = (root / "test.txt").read_text().split()
    (root / "Mask" / f"{names[0]}.png").unlink()
    Image.new("L", (7, 7)).save(root / "Mask" / f"{names[1]}.png")
    config = tmp_path / "c.yaml"
    config.write_text(f"task: binary\ndata: {{layout: binary, root: {root}}}\nmodel: {{name: fusion}}\n")
    assert main(["check-data", str(config)]) == 1
    out = capsys.readouterr().out
    assert names[0] in out and names[1] in out and "2 problem(s)" in out


def test_eval_on_prediction_folders_writes_json(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 255
    Image.fromarray(mask).save(gt / "a.png")
    Image.fromarray(mask[::2, ::2]).save(pred / "a.jpg".replace(".jpg", ".png"))  # half size: resized
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--output", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_images"] == 1
    assert result["metrics"]["MAE"] < 0.05 and result["metrics"]["Sm"] > 0.9
    assert "maxFm_datasetPR" in capsys.readouterr().out


def test_methods_lists_all_registered(capsys):
    from segkd.distill import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert f"{name}  [" in out
    feature_kd = out[out.index("feature_kd  ["):].splitlines()
    assert "student: stage3; teacher: stage3" in feature_kd[2]
    assert "teacher: no teacher" in out[out.index("sad  ["):].splitlines()[2]
    assert {"logits_kd", "feature_kd", "cwd", "skd", "ifvd", "dist", "cirkd", "pspsd", "tfkd", "frskd",
            "byot", "dhm", "sad", "dks"} <= set(METHODS.names())


def test_config_error_is_a_message_not_a_traceback(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: binary\nmodel: {name: fusion}\ntrain: {epochz: 1}\n")
    assert main(["check-data", str(config)]) == 1
    assert "train.epochz: unknown key" in capsys.readouterr().err


def test_train_then_export_onnx_and_torchscript(tmp_path, capsys):
    import onnxruntime as ort
    import torch

    from segkd.config import save_config
    from segkd.engine.run import load_trained

    from engine_helpers import tiny_binary_config

    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    save_config(cfg, tmp_path / "run.yaml")
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    ckpt = cfg.run_dir / "last.pt"
    assert main(["export", str(ckpt), "--format", "both"]) == 0
    assert "max |diff|" in capsys.readouterr().out
    onnx_path, ts_path = ckpt.with_suffix(".onnx"), ckpt.with_suffix(".torchscript.pt")
    _, model, _ = load_trained(ckpt)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        expected = model(x)["out"].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4
    # TorchScript is traced at the test size (32×32); check it there
    x32 = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected32 = model(x32)["out"]
        traced_out = torch.jit.load(str(ts_path))(x32)
    traced_out = traced_out["out"] if isinstance(traced_out, dict) else traced_out
    assert (traced_out - expected32).abs().max() < 1e-4
