"""segkd compare never reuses a run trained with another config."""
from __future__ import annotations

import pytest

from segkd.commands.compare_config import CompareConfig
from segkd.commands.compare_runner import train_all
from segkd.config import ConfigError, save_config

from engine_helpers import tiny_binary_config


def _cc(tmp_path, epochs):
    return CompareConfig.model_validate({
        "name": "t", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"),
        "seeds": [1], "set": [f"train.epochs={epochs}"], "baseline": "base", "entries": [{"name": "base"}],
    })


def test_changed_comparison_refuses_then_retrains(tmp_path):
    save_config(tiny_binary_config(tmp_path), tmp_path / "run.yaml")
    messages: list[str] = []
    first = train_all(_cc(tmp_path, 1), log=messages.append).results
    assert first["base"][1]["iterations"] == 2
    assert train_all(_cc(tmp_path, 1), log=messages.append).results["base"][1]["iterations"] == 2
    assert "finished earlier with the same config, reused" in messages[-1]
    with pytest.raises(ConfigError, match=r"base seed 1: train.epochs: 1 → 2") as err:
        train_all(_cc(tmp_path, 2), log=messages.append)  # was: "finished earlier, reused" with 2 iterations
    assert "--retrain" in str(err.value)
    again = train_all(_cc(tmp_path, 2), log=messages.append, retrain=True).results
    assert again["base"][1]["iterations"] == 4
    kept = list((tmp_path / "cmp" / "base").glob("seed1.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "metrics.json").is_file()


def test_a_stopped_comparison_run_says_to_run_compare_again_not_resume(tmp_path, monkeypatch):
    # segkd compare has no --resume: running the same command again resumes the stopped run
    from segkd.commands import compare_runner
    from segkd.engine.errors import TrainingInterrupted
    from segkd.engine.trainer import RESUME_HINT

    def stopped(cfg, resume):
        raise TrainingInterrupted(f"stopped by SIGTERM at iteration 3; the last checkpoint is from 3; {RESUME_HINT}")

    monkeypatch.setattr(compare_runner, "fit", stopped)
    with pytest.raises(TrainingInterrupted) as err:
        compare_runner._fit_in_worker(tiny_binary_config(tmp_path))
    assert str(err.value) == ("stopped by SIGTERM at iteration 3; the last checkpoint is from 3; "
                              "run the same segkd compare command again to continue")
