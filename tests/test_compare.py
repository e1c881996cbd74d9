"""segkd compare: significance against the seed spread, tables, plots, continuing a comparison."""
from __future__ import annotations

import json

import pytest

from segkd.config import save_config
from segkd.engine.compare import CompareConfig, compare, summarise

from engine_helpers import tiny_binary_config


def _cc(tmp_path, entries, seeds=(1, 2)):
    return CompareConfig.model_validate({
        "name": "t", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"),
        "seeds": list(seeds), "baseline": "base", "entries": entries, "qualitative_images": 2,
    })


def _result(mae):
    return {"student": {"MAE": mae, "maxFm": 0.5, "maxFm_datasetPR": 0.5, "Sm": 0.5, "maxEm": 0.5, "wFm": 0.5}}


def test_gain_within_seed_spread_is_not_significant(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "small_gain"}, {"name": "big_gain"}, {"name": "big_loss"}])
    results = {
        "base": {1: _result(0.10), 2: _result(0.12)},        # std 0.0141
        "small_gain": {1: _result(0.10), 2: _result(0.11)},  # gain −0.005: inside the spread
        "big_gain": {1: _result(0.05), 2: _result(0.06)},    # gain −0.055: outside, and MAE lower is better
        "big_loss": {1: _result(0.16), 2: _result(0.17)},    # +0.055 MAE: outside, worse
    }
    rows = {r["method"]: r for r in summarise(cc, results, "binary")}
    assert rows["base"]["MAE"] == pytest.approx(0.11)
    assert rows["base"]["MAE_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert rows["small_gain"]["gain"] == pytest.approx(-0.005)
    assert rows["small_gain"]["significant"] == "no (within seed spread)"
    assert rows["big_gain"]["significant"] == "yes (better)"
    assert rows["big_loss"]["significant"] == "yes (worse)"
    one_seed = summarise(_cc(tmp_path, [{"name": "base"}, {"name": "x"}], seeds=(1,)),
                         {"base": {1: _result(0.1)}, "x": {1: _result(0.01)}}, "binary")
    assert one_seed[1]["significant"] == "unknown (1 seed)"


def test_compare_end_to_end_and_continues(tmp_path):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "deterministic": False}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "sad", "set": ["distill.methods=[{name: sad, start: 0.0}]"]}])
    result = compare(cc, log=lambda *_: None)
    out = tmp_path / "cmp"
    for name in ("results.md", "results.csv", "results.json", "bars_MAE.png", "training_curves.png",
                 "qualitative.png", "pr_curves.png", "f_threshold.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["base", "sad"]
    assert all(r["seeds"] == 2 and r["params_M"] > 0 and r["GFLOPs"] > 0 for r in rows)
    # the inference model of a self-distillation run is exactly the baseline network
    assert rows[0]["params_M"] == rows[1]["params_M"]
    assert "| sad |" in result["markdown"]
    # running again trains nothing: every (entry, seed) is reused
    messages = []
    compare(cc, log=messages.append)
    assert len(messages) == 4 and all("reused" in m for m in messages)
