"""Settings found wrong before a run spends its time, methods listed twice, and one-line errors
(not tracebacks) for devices, teacher caches, layouts in compare, eval and export arguments."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from segkd.cli import main
from segkd.config import TASK_METRICS, ConfigError, save_config, validate
from segkd.engine import builders
from segkd.engine.distiller import Distiller
from segkd.metrics.semantic import SegmentationMetric
from segkd.metrics.sod import SODMetrics
from segkd.models import build_model

from engine_helpers import tiny_binary_config, tiny_semantic_config


def _one_line_error(capsys, *expected: str) -> str:
    """stderr is a single ``segkd CMD: error: ...`` line holding each of ``expected``, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segkd ") and ": error: " in lines[0], err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture()
def binary_config(tmp_path):
    path = tmp_path / "run.yaml"
    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "max_iters": 1}), path)
    return path


# ---------------------------------------------------------------- A: evaluation settings before training


@pytest.mark.parametrize("override, expected", [
    ("eval.metric=mae", "'mae' is not a metric of the binary task (did you mean 'MAE'?)"),
    ("eval.scales=[]", "must be a non-empty list of positive scales"),
    ("eval.stride_rate=0", "must lie in (0, 1]"),
])
def test_evaluation_settings_are_refused_before_training(binary_config, tmp_path, capsys, override, expected):
    assert main(["train", str(binary_config), "--set", override]) == 1
    _one_line_error(capsys, f"--set {override}: ", expected)
    assert not (tmp_path / "run").exists()  # nothing trained, no run folder: no epoch was spent


def test_semantic_metric_names_suggest_the_spelling(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.metric: 'miou' is not a metric .*did you mean 'mIoU'"):
        tiny_semantic_config(tmp_path, eval={"metric": "miou"})
    assert tiny_semantic_config(tmp_path, eval={"metric": "mAcc"}).best_metric == ("mAcc", True)


def test_the_metric_names_checked_are_those_evaluation_returns():
    sod = SODMetrics()
    rng = np.random.default_rng(0)
    sod.step((rng.random((8, 8)) * 255).astype(np.uint8), np.pad(np.full((4, 4), 255, np.uint8), 2))
    assert set(sod.get_results()) == set(TASK_METRICS["binary"])
    semantic = SegmentationMetric(3)
    semantic.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
    assert set(semantic.compute()) - {"per_class"} == set(TASK_METRICS["semantic"])


# ---------------------------------------------------------------- B: a method listed twice; settings that train nothing


def test_a_method_listed_twice_keeps_both_terms(tmp_path):
    twice = [{"name": "sad", "start": 0.0, "weight": 1.0}, {"name": "sad", "start": 0.0, "weight": 2.0}]
    cfg = tiny_binary_config(tmp_path, distill={"methods": twice}, train={"epochs": 1, "max_iters": 1})
    methods = Distiller(nn.Conv2d(3, 1, 1), None, builders.build_methods(cfg)).methods
    assert [m.name for m in methods] == ["sad", "sad_2"]
    assert type(methods[1]).name == "sad"  # the registered name stays
    save_config(cfg, tmp_path / "run.yaml")
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    logged = next(json.loads(line)["train"] for line in lines if "train" in json.loads(line))
    # was: one "sad/attention" term, the second entry's value replacing the first's
    assert {"sad/attention", "sad_2/attention"} <= set(logged)
    assert logged["sad/attention"] > 0
    assert logged["sad_2/attention"] == pytest.approx(2 * logged["sad/attention"])  # same maps, twice the weight
    assert logged["total"] == pytest.approx(sum(v for k, v in logged.items() if k != "total"))


@pytest.mark.parametrize("settings, expected", [
    ({"optim": {"lr": 0.0}}, "optim.lr is 0.0 with LR factors"),
    ({"optim": {"backbone_lr_mult": 0.0, "head_lr_mult": 0.0}}, "training will not change the weights"),
    ({"data": {"crop_size": 1}}, "data.crop_size is 1: training on images under 16 pixels"),
])
def test_settings_that_train_to_nothing_warn(tmp_path, settings, expected):
    with pytest.warns(UserWarning, match=expected):
        tiny_semantic_config(tmp_path, **settings)


def test_a_plain_config_does_not_warn(tmp_path, recwarn):
    tiny_semantic_config(tmp_path)
    tiny_binary_config(tmp_path)
    assert not [w for w in recwarn if "will not change the weights" in str(w.message) or " pixels" in str(w.message)]


# ---------------------------------------------------------------- C: one line, not a traceback


def test_a_missing_base_in_a_list_is_one_line_naming_the_file(tmp_path, binary_config, capsys):
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": [str(binary_config), "nowhere.yaml"], "name": "x"}))
    assert main(["check-data", str(child)]) == 1
    _one_line_error(capsys, "child.yaml: base 'nowhere.yaml' not found")


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=-0.1", "--set optim.lr=-0.1: Input should be greater than or equal to 0"),
    ("optim.weight_decay=-1", "--set optim.weight_decay=-1: Input should be greater than or equal to 0"),
    ("loss.main_weight=0", "--set loss.main_weight=0: 0 with distill.methods empty: nothing would train"),
    ("train.device=gpu", "--set train.device=gpu: unknown device 'gpu'; use auto, cpu, cuda, cuda:N"),
])
def test_training_settings_are_one_line(binary_config, capsys, override, expected):
    assert main(["train", str(binary_config), "--set", override]) == 1
    _one_line_error(capsys, expected)


def test_cuda_without_cuda_is_one_line(binary_config, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", str(binary_config), "--set", "train.device=cuda"]) == 1
    _one_line_error(capsys, "train.device is 'cuda' but CUDA is not available", "train.device=auto (or cpu)")


TEACHER = {"name": "pspnet", "backbone": "resnet18", "output_stride": 8, "head_channels": 32}


@pytest.fixture()
def cached_config(tmp_path):
    """A distillation config whose teacher cache has been filled (``segkd cache-teacher``)."""
    torch.manual_seed(0)
    teacher = build_model("pspnet", num_classes=3, **{k: v for k, v in TEACHER.items() if k != "name"})
    torch.save(teacher.state_dict(), tmp_path / "teacher.pth")
    cfg = tiny_semantic_config(tmp_path, train={"max_iters": 1}, distill={
        "teacher": {"model": TEACHER, "checkpoint": str(tmp_path / "teacher.pth"), "cache": str(tmp_path / "cache")},
        "methods": [{"name": "logits_kd", "at": "out"}]})
    path = tmp_path / "kd.yaml"
    save_config(cfg, path)
    assert main(["cache-teacher", str(path)]) == 0
    return path


@pytest.mark.parametrize("damage, expected", [
    ("", "manifest.json is unreadable"),
    ("{not json", "manifest.json is unreadable"),
    ("[1, 2]", "manifest.json is not a teacher-cache manifest"),
    ('{"format": "segkd-teacher-cache-v2"}', "manifest.json is incomplete (it lacks ["),
])
def test_a_damaged_cache_manifest_is_one_line(cached_config, tmp_path, capsys, damage, expected):
    (tmp_path / "cache" / "manifest.json").write_text(damage)
    for command in ("cache-teacher", "train"):
        assert main([command, str(cached_config)]) == 1
        _one_line_error(capsys, expected, f"delete the folder {tmp_path / 'cache'} to fill the cache again")


def test_a_damaged_or_foreign_cache_map_is_one_line(cached_config, tmp_path, capsys):
    maps = sorted((tmp_path / "cache" / "maps").glob("*.npy"))
    assert len(maps) == 8
    for path in maps:  # every map: the first one a batch reads is one of them
        path.write_bytes(b"")
    assert main(["train", str(cached_config)]) == 1
    _one_line_error(capsys, ".out.npy is unreadable", "manifest.json to fill the cache again")
    for path in maps:  # another class count: a map of 5 channels where this run has 3 classes
        np.save(path, np.zeros((5, 32, 32), np.float16))
    assert main(["train", str(cached_config)]) == 1
    _one_line_error(capsys, "holds a map of shape (5, 32, 32), not 3×H×W")
    np.save(maps[5], np.zeros((3, 32, 32), np.float16))
    maps[5].write_bytes(maps[5].read_bytes()[:-100])
    for path in maps[:5] + maps[6:]:
        np.save(path, np.zeros((3, 32, 32), np.float16))
    # checked before training: not by a data-loading worker, whose error would carry its traceback
    assert main(["train", str(cached_config), "--set", "data.num_workers=2"]) == 1
    _one_line_error(capsys, f"{maps[5]} is cut short; delete")


def _camvid(root, void_value=11):
    """A tiny CamVid (SegNet layout) whose labels hold the void value 11, mapped to 255 when read."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(4):
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / f"f{i}.png")
            label = np.full((32, 32), void_value, np.uint8)
            label[4:20, 4:20] = i % 3
            Image.fromarray(label).save(root / f"{split}annot" / f"f{i}.png")
    return root


def test_compare_on_a_mapped_layout_writes_its_figures(tmp_path, capsys):
    raw = tiny_semantic_config(tmp_path, train={"max_iters": 1}).to_dict()
    del raw["data"]["synthetic"]
    raw["data"].update(layout="camvid", root=str(_camvid(tmp_path / "camvid")), num_classes=11, class_names=None)
    save_config(validate(raw), tmp_path / "run.yaml")
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump({
        "name": "c", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"), "seeds": [1],
        "baseline": "base", "entries": [{"name": "base"}], "qualitative_images": 2, "latency_size": 32}))
    assert main(["compare", str(tmp_path / "cmp.yaml")]) == 0  # was: a traceback, "label values [11] are outside"
    assert "Traceback" not in capsys.readouterr().err
    figure = tmp_path / "cmp" / "qualitative.png"
    assert figure.is_file() and figure.stat().st_size > 0
    assert json.loads((tmp_path / "cmp" / "results.json").read_text())[0]["method"] == "base"


def test_eval_arguments_are_checked_first(tmp_path, capsys):
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / folder / "a.png")
    scored = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*scored, "--num-classes", "0"]) == 2
    _one_line_error(capsys, "--num-classes must be at least 1, got 0")
    assert main([*scored, "--output", str(tmp_path)]) == 2
    _one_line_error(capsys, f"--output {tmp_path} is a folder", "metrics.json")
    assert main(["eval", "--checkpoint", str(tmp_path / "x.pt"), "--output", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a folder")


def test_export_sizes_are_one_line(binary_config, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nosuch.pt"), "--size", "0", "0"]) == 2  # before reading anything
    _one_line_error(capsys, "--size 0 0: height and width must be at least 1 pixel")
    assert main(["train", str(binary_config)]) == 0
    capsys.readouterr()
    checkpoint = tmp_path / "run" / "last.pt"
    # the fusion network's deepest features are 1/32 of the input: at 8×8 one pixel, which tracing bakes in
    assert main(["export", str(checkpoint), "--size", "8", "8", "--output", str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "--size 8 8: the ONNX graph traced at 8×8 fails in ONNX Runtime at 40×72", "--static")
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", str(checkpoint), "--size", "8", "8", "--static", "--output", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()


def test_an_error_in_a_loader_worker_is_one_line():
    from segkd.cli import _without_worker_traceback

    wrapped = ("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 3, in f\n    raise DataError(...)\n'
               "segkd.data.readers.DataError: data/a.png: cannot read image (truncated)\n")
    assert _without_worker_traceback(wrapped) == "data/a.png: cannot read image (truncated)"
    assert _without_worker_traceback("plain: message") == "plain: message"
