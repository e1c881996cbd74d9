"""DDP with two gloo processes on the CPU: training, replica agreement, exact sharded evaluation."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from segkd.engine.run import evaluate_checkpoint

from engine_helpers import tiny_binary_config, tiny_semantic_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, task: str, tmp: str) -> None:
    from pathlib import Path

    import torch

    from segkd.engine.trainer import fit

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    make = tiny_binary_config if task == "binary" else tiny_semantic_config
    extra = {}
    if task == "semantic_cached":  # logits KD from a teacher cache the main process fills
        extra["distill"] = {"teacher": {"model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
                                        "checkpoint": str(Path(tmp) / "teacher.pth"),
                                        "cache": str(Path(tmp) / "cache")},
                            "methods": [{"name": "logits_kd"}]}
    cfg = make(Path(tmp), train={"epochs": 1, "device": "cpu", "sync_bn": True}, **extra)
    report = fit(cfg)
    (Path(tmp) / f"report{rank}.json").write_text(json.dumps(report))


@pytest.mark.parametrize("task", ["binary", "semantic"])
def test_two_process_gloo_training_matches_one_process_evaluation(tmp_path, task):
    # 5 (binary) / 3 (semantic) validation images: shards of unequal size, nothing may be counted twice
    make = tiny_binary_config if task == "binary" else tiny_semantic_config
    from segkd.data.build import resolve_root

    resolve_root(make(tmp_path).data, task)  # generate the data once, before the processes start
    mp.spawn(_worker, args=(2, _free_port(), task, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(2)]
    fingerprints = reports[0]["replica_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert reports[0]["student"] == reports[1]["student"]
    single = evaluate_checkpoint(tmp_path / "run" / "last.pt", overrides=["train.device=cpu"])
    key = "MAE" if task == "binary" else "mIoU"
    assert reports[0]["student"][key] == pytest.approx(single[key], abs=1e-12)
    if task == "binary":
        assert reports[0]["student"]["maxFm_datasetPR"] == pytest.approx(single["maxFm_datasetPR"], abs=1e-12)
    else:
        assert reports[0]["student"]["allAcc"] == pytest.approx(single["allAcc"], abs=1e-12)


def test_two_process_training_from_a_teacher_cache_filled_once(tmp_path):
    import torch

    from segkd.data.build import resolve_root
    from segkd.models import build_model

    resolve_root(tiny_semantic_config(tmp_path).data, "semantic")
    torch.save(build_model("pspnet", backbone="resnet18", num_classes=3, output_stride=8).state_dict(),
               tmp_path / "teacher.pth")
    mp.spawn(_worker, args=(2, _free_port(), "semantic_cached", str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(2)]
    assert reports[0]["replica_fingerprints"][0] == reports[0]["replica_fingerprints"][1]
    assert (tmp_path / "cache" / "manifest.json").is_file()
    assert len(list((tmp_path / "cache" / "maps").glob("*.npy"))) == 8


def test_sync_bn_converts_the_methods_parts_as_the_student():
    from torch import nn

    from segkd.distill import build_method
    from segkd.engine.trainer import sync_batchnorm

    student = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    methods = nn.ModuleList([build_method({"name": "cirkd"})])
    methods[0].project = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))  # as setup() builds it
    weight = methods[0].project[1].weight
    student, methods = sync_batchnorm(student, methods)
    assert isinstance(student[1], nn.SyncBatchNorm)
    assert isinstance(methods[0].project[1], nn.SyncBatchNorm)
    assert methods[0].project[1].weight is weight  # the optimiser's parameter objects stay valid
