"""``segkd eval --heads``: each prediction head a self-distillation run trained, scored beside the output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkd.cli import main
from segkd.data import build_dataset
from segkd.distill.hooks import FeatureTaps
from segkd.distill.side_branches import FORKS, STAGES
from segkd.engine.builders import build_methods, build_student
from segkd.engine.checkpoint import read_checkpoint
from segkd.engine.run import evaluate_heads
from segkd.engine.trainer import fit

from engine_helpers import tiny_binary_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A baseline (Tf-KD's teacher), then Tf-KD + DKS: a method with heads after one without."""
    tmp = tmp_path_factory.mktemp("heads")
    baseline = tiny_binary_config(tmp / "baseline", train={"epochs": 1})
    fit(baseline)
    both = tiny_binary_config(tmp / "both", distill={
        "teacher": {"model": {"name": "fusion", "backbone": "resnet18", "width": 8},
                    "checkpoint": str(baseline.run_dir / "last.pt")},
        "methods": [{"name": "tfkd"}, {"name": "dks"}]})
    fit(both)
    return baseline, both


def hand_scored_mae(cfg, head: str) -> float:
    """The MAE of one DKS branch over the validation images, computed here without the Distiller."""
    ckpt = read_checkpoint(cfg.run_dir / "last.pt")
    student = build_student(cfg)
    student.load_state_dict(ckpt["model"])
    student.eval()
    dks = build_methods(cfg)[1]
    with torch.no_grad():
        example = torch.zeros(2, 3, 32, 32)
        with FeatureTaps(student, dks.student_taps) as taps:
            student(example)  # in eval mode: the shapes, without touching the BatchNorm statistics
            dks.setup({k: v.shape for k, v in taps.pop().items()}, None)
        dks.load_state_dict({k.split(".", 1)[1]: v for k, v in ckpt["methods"].items() if k.startswith("1.")})
        dks.eval()
        errors = []
        for sample in build_dataset(cfg.data, "binary", "val"):
            image = sample["image"][None]
            with FeatureTaps(student, dks.student_taps) as taps:
                out = student(image)["out"]
                features = {**taps.pop(), "out": out}
            fork = head.removeprefix("branch@")
            shared = [features[stage] for stage in STAGES[: STAGES.index(fork) + 1]]
            logits = dks.branches[FORKS.index(fork)](shared, image.shape[-2:])
            gt = sample["mask"][0].numpy() > 0.5
            prob = torch.sigmoid(F.interpolate(logits, size=gt.shape, mode="bilinear", align_corners=False))[0, 0]
            grey = (prob.clamp(0, 1) * 255).round().numpy() / 255.0
            if grey.max() > grey.min():  # PySODMetrics scales each map to [0, 1] before scoring
                grey = (grey - grey.min()) / (grey.max() - grey.min())
            errors.append(np.abs(grey - gt).mean())
    return float(np.mean(errors))


def test_heads_are_scored_like_the_output_and_by_hand(runs):
    _, cfg = runs
    heads = evaluate_heads(cfg.run_dir / "last.pt")
    # Tf-KD has no heads (its teacher is another model); DKS's branches are named by their fork
    assert list(heads) == ["out", *(f"dks/branch@{fork}" for fork in FORKS)]
    stored = json.loads((cfg.run_dir / "metrics.json").read_text())["student"]
    assert heads["out"]["MAE"] == pytest.approx(stored["MAE"], abs=1e-9)
    for fork in FORKS:
        assert heads[f"dks/branch@{fork}"]["MAE"] == pytest.approx(hand_scored_mae(cfg, f"branch@{fork}"), abs=1e-6)
    assert len({round(m["MAE"], 6) for m in heads.values()}) == len(heads)  # different predictions
    # the run scored its heads itself at the end of training, the same way; the baseline has none
    written = json.loads((cfg.run_dir / "metrics.json").read_text())["heads"]
    assert written.keys() == set(heads) - {"out"}
    assert all(written[name]["MAE"] == pytest.approx(heads[name]["MAE"], abs=1e-9) for name in written)
    assert "heads" not in json.loads((runs[0].run_dir / "metrics.json").read_text())


def test_heads_on_the_command_line_and_a_run_without_heads(runs, tmp_path, capsys):
    baseline, cfg = runs
    out = tmp_path / "heads.json"
    assert main(["eval", "--checkpoint", str(cfg.run_dir / "last.pt"), "--heads", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"dks/branch@{FORKS[0]}" in printed
    assert set(json.loads(out.read_text())) >= {"out", f"dks/branch@{FORKS[-1]}"}
    assert main(["eval", "--checkpoint", str(baseline.run_dir / "last.pt"), "--heads"]) == 1
    err = capsys.readouterr().err
    assert "trained no method with prediction heads of its own (methods: none)" in err
    assert "pspsd" in err and len(err.strip().splitlines()) == 1
    # other methods than the run trained: their parts cannot be the stored ones
    assert main(["eval", "--checkpoint", str(cfg.run_dir / "last.pt"), "--heads",
                 "--set", "distill.methods=[{name: dhm}]"]) == 1
    err = capsys.readouterr().err
    assert "its method parts do not fit the methods configured (dhm)" in err and len(err.strip().splitlines()) == 1
