"""Nothing a user has is lost: no output over an input, no result deleted implicitly, one training
per run folder, and a job ended by SIGTERM resumes exactly where it was stopped."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from PIL import Image

from segkd.cli import main
from segkd.config import save_config
from segkd.engine import trainer as trainer_module
from segkd.engine.checkpoint import read_checkpoint
from segkd.engine.errors import TrainingInterrupted
from segkd.engine.resume import RunFolderError, hold_run_folder
from segkd.engine.trainer import fit

from engine_helpers import tiny_binary_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_binary_config(tmp_path_factory.mktemp("lost"), train={"epochs": 1})
    fit(cfg)
    return cfg


def _photos(folder, names=("a.jpg", "b.jpg")):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24, 20), (40 * i, 90, 160)).save(folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize("where", ["same", "inside"])
def test_predict_never_writes_among_the_inputs(trained, tmp_path, capsys, where):
    photos = tmp_path / "photos"
    before = _photos(photos)
    output = photos if where == "same" else photos / "preds"
    assert main(["predict", "--checkpoint", str(trained.run_dir / "last.pt"), "--input", str(photos),
                 "--output", str(output)]) == 1
    assert "choose a folder outside it" in _error(capsys)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_predict_refuses_inputs_that_share_a_name(trained, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photos(photos, ("x.jpg", "x.png", "y.jpg"))
    assert main(["predict", "--checkpoint", str(trained.run_dir / "last.pt"), "--input", str(photos),
                 "--output", str(tmp_path / "preds")]) == 1
    err = _error(capsys)
    assert "x.jpg" in err and "x.png" in err and "x.png;" in err.replace("'", "")
    assert not (tmp_path / "preds").exists()


def test_eval_save_dir_never_writes_over_the_data(trained, capsys):
    masks = trained.data.root / "Mask"
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    assert main(["eval", "--checkpoint", str(trained.run_dir / "last.pt"), "--save-dir", str(masks)]) == 1
    assert "--save-dir" in _error(capsys)
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before


def test_export_never_writes_over_the_checkpoint(trained, capsys):
    path = trained.run_dir / "last.pt"
    before = path.read_bytes()
    assert main(["export", str(path), "--output", str(path)]) == 2
    assert "is the checkpoint being exported" in _error(capsys)
    assert path.read_bytes() == before


@pytest.mark.parametrize("resume", [False, True])
def test_results_without_last_checkpoint_are_never_deleted(tmp_path, capsys, resume):
    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "best.pt").write_bytes(b"an earlier best model")
    (cfg.run_dir / "metrics.json").write_text('{"MAE": 0.1}')
    save_config(cfg, tmp_path / "run.yaml")
    assert main(["train", str(tmp_path / "run.yaml"), *(["--resume"] if resume else [])]) == 1
    assert "Move or delete them to start over" in _error(capsys)
    assert (cfg.run_dir / "best.pt").read_bytes() == b"an earlier best model"
    assert (cfg.run_dir / "metrics.json").read_text() == '{"MAE": 0.1}'


def test_a_run_folder_holds_one_training(tmp_path):
    cfg = tiny_binary_config(tmp_path, train={"epochs": 1})
    with hold_run_folder(cfg.run_dir):  # another training in this folder
        with pytest.raises(RunFolderError, match=f"in use by another training \\(process {os.getpid()}\\)"):
            fit(cfg)
        assert not (cfg.run_dir / "config.yaml").exists()
    fit(cfg)  # released: the folder trains again
    assert (cfg.run_dir / "last.pt").is_file()


def test_sigterm_checkpoints_the_step_and_resume_is_exact(tmp_path, monkeypatch):
    straight = tiny_binary_config(tmp_path / "a", train={"epochs": 3})
    fit(straight)
    stopped = tiny_binary_config(tmp_path / "b", train={"epochs": 3})
    real_step = trainer_module.train_step

    def step_then_term(run, batch, epoch):
        losses = real_step(run, batch, epoch)
        if run.iteration == 3:  # mid-epoch 2 of 3 (two steps an epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return losses

    monkeypatch.setattr(trainer_module, "train_step", step_then_term)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at iteration 3; the last checkpoint .* "
                                                  "is from iteration 3 .*--resume"):
        fit(stopped)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed
    assert read_checkpoint(stopped.run_dir / "last.pt")["iteration"] == 3
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    fit(stopped, resume=True)
    a, b = (read_checkpoint(c.run_dir / "last.pt")["model"] for c in (straight, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_to_the_loader_workers_too_still_stops_with_a_checkpoint(tmp_path, monkeypatch):
    # a batch scheduler (e.g. SLURM's scancel) signals every process of the job; here the loader's
    # worker gets it first (after step 3, before it delivers step 4's batch), the trainer after step 4
    cfg = tiny_binary_config(tmp_path, train={"epochs": 4}, data={"num_workers": 1, "synthetic": {"num_train": 16}})
    real_step = trainer_module.train_step

    def step_then_term_all(run, batch, epoch):
        losses = real_step(run, batch, epoch)
        me = os.getpid()
        if run.iteration == 3:
            children = open(f"/proc/{me}/task/{me}/children").read().split()
            assert children  # the loader's worker
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            time.sleep(0.5)
        if run.iteration == 4:
            os.kill(me, signal.SIGTERM)
        return losses

    monkeypatch.setattr(trainer_module, "train_step", step_then_term_all)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at iteration 4"):
        fit(cfg)  # was: RuntimeError, the DataLoader worker killed by signal Terminated
    assert read_checkpoint(cfg.run_dir / "last.pt")["iteration"] == 4
