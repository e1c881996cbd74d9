"""segkd compare: significance (twice the standard error of the gain), tables, plots, continuing a comparison."""
from __future__ import annotations

import ast
import contextlib
import json
import os
from pathlib import Path

import pytest
import torch

from segkd.commands import compare_config
from segkd.commands.compare import CompareConfig, compare, summarise
from segkd.commands.compare_report import format_markdown
from segkd.commands.head_scores import format_heads, head_scores
from segkd.commands.loss_terms import format_terms, loss_terms
from segkd.commands.per_seed import format_machines, format_per_seed, paired_gain, paired_gains, per_seed
from segkd.config import ConfigError, save_config

from engine_helpers import tiny_binary_config


def _cc(tmp_path, entries, seeds=(1, 2)):
    return CompareConfig.model_validate({
        "name": "t", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"),
        "seeds": list(seeds), "baseline": "base", "entries": entries, "qualitative_images": 2,
    })


@contextlib.contextmanager
def _counting(monkeypatch, name):
    """The calls ``segkd.commands.compare_config`` makes to its function ``name``, still called."""
    calls, real = [], getattr(compare_config, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_config, name, counted)
    yield calls
    monkeypatch.setattr(compare_config, name, real)


def _result(mae):
    return {"student": {"MAE": mae, "maxFm": 0.5, "maxFm_datasetPR": 0.5, "Sm": 0.5, "maxEm": 0.5, "wFm": 0.5}}


def test_significance_is_twice_the_standard_error_of_the_gain(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "small_gain"}, {"name": "big_gain"}, {"name": "big_loss"}],
             seeds=(1, 2, 3))
    results = {
        "base": {1: _result(0.10), 2: _result(0.11), 3: _result(0.12)},        # mean 0.11, std 0.01
        "small_gain": {1: _result(0.09), 2: _result(0.10), 3: _result(0.11)},  # −0.01 vs 2 SE 0.01633
        "big_gain": {1: _result(0.08), 2: _result(0.09), 3: _result(0.10)},    # −0.02: beyond 2 SE, MAE lower = better
        "big_loss": {1: _result(0.13), 2: _result(0.14), 3: _result(0.15)},    # +0.03 MAE: worse
    }
    rows = {r["method"]: r for r in summarise(cc, results, "binary")}
    assert rows["base"]["MAE"] == pytest.approx(0.11)
    assert rows["base"]["MAE_std"] == pytest.approx(0.01)
    # 2·sqrt(0.01²/3 + 0.01²/3) = 0.016330
    assert rows["small_gain"]["threshold"] == pytest.approx(0.0163299, rel=1e-5)
    assert rows["small_gain"]["gain"] == pytest.approx(-0.01)
    assert rows["small_gain"]["significant"] == "no (within 2 SE)"
    assert rows["big_gain"]["significant"] == "yes (better)"
    assert rows["big_loss"]["significant"] == "yes (worse)"
    # fewer than three seeds: no verdict, whatever the gain
    two = summarise(_cc(tmp_path, [{"name": "base"}, {"name": "x"}], seeds=(1, 2)),
                    {"base": {1: _result(0.1), 2: _result(0.1)}, "x": {1: _result(0.01), 2: _result(0.011)}},
                    "binary")
    assert two[1]["significant"] == "unknown (2 seeds)" and two[1]["threshold"] is None
    one_seed = summarise(_cc(tmp_path, [{"name": "base"}, {"name": "x"}], seeds=(1,)),
                         {"base": {1: _result(0.1)}, "x": {1: _result(0.01)}}, "binary")
    assert one_seed[1]["significant"] == "unknown (1 seed)"


def test_the_teacher_gap_closed_is_the_gain_over_the_teachers_lead(tmp_path):
    cc = _cc(tmp_path, [{"name": "teacher", "role": "teacher", "seeds": [1]}, {"name": "base"},
                        {"name": "kd", "teacher_from": "teacher"}, {"name": "other"}], seeds=(1, 2, 3))
    results = {
        "teacher": {1: _result(0.05)},
        "base": {1: _result(0.10), 2: _result(0.11), 3: _result(0.12)},
        "kd": {1: _result(0.07), 2: _result(0.08), 3: _result(0.09)},   # 0.03 of the teacher's 0.06 lead
        "other": {1: _result(0.08), 2: _result(0.08), 3: _result(0.08)},
    }
    rows = {r["method"]: r for r in summarise(cc, results, "binary")}
    assert rows["kd"]["gap_closed"] == pytest.approx(0.5)
    assert "gap_closed" not in rows["other"] and "gap_closed" not in rows["base"]  # no teacher of their own
    table = format_markdown(list(rows.values()), "binary", "MAE", "t")
    assert table.splitlines()[2].endswith("| teacher gap closed |")
    assert next(line for line in table.splitlines() if line.startswith("| kd ")).endswith("| 50 % |")
    results["teacher"] = {1: _result(0.13)}  # behind the baseline: no gap to close, no column
    rows = summarise(cc, results, "binary")
    assert not any("gap_closed" in r for r in rows)
    assert "teacher gap closed" not in format_markdown(rows, "binary", "MAE", "t")


def test_compare_end_to_end_and_continues(tmp_path, monkeypatch):
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
    assert "| sad |" in result["markdown"] and ", 2 seed(s) per row" in result["markdown"]
    # each run's loss terms near the end of training: SAD's term beside the task loss, adding up to the total
    terms = rows[1]["loss_terms"]
    assert set(terms) == {"task", "sad/attention", "total"} and set(rows[0]["loss_terms"]) == {"task", "total"}
    assert terms["total"] == pytest.approx(terms["task"] + terms["sad/attention"], rel=1e-4)
    assert "| sad | task " in result["markdown"] and " · sad/attention " in result["markdown"]
    assert "loss_terms" not in (out / "results.csv").read_text().splitlines()[0]
    # the runs seed by seed, and SAD's gain paired with the baseline's run of the same seed
    assert set(rows[1]["per_seed"]) == {"1", "2"} and rows[1]["paired_seeds"] == 2
    d1, d2 = (rows[1]["per_seed"][s] - rows[0]["per_seed"][s] for s in ("1", "2"))
    # with the same seeds the mean of the differences is the difference of the means; 2 SE of two: |d1 − d2|
    assert rows[1]["paired_gain"] == pytest.approx(rows[1]["gain"]) == pytest.approx((d1 + d2) / 2)
    assert rows[1]["paired_2se"] == pytest.approx(abs(d1 - d2))
    assert "MAE per seed" in result["markdown"] and "| sad | " in result["markdown"].split("MAE per seed")[1]
    # each run records what its floats depend on besides config and seed; one set-up here, named once
    machine = json.loads((out / "base" / "seed1" / "metrics.json").read_text())["machine"]
    assert machine["torch"] == torch.__version__ and machine["threads"] >= 1
    assert machine["device"] == "cpu" and machine["processes"] == 1 and machine["cpu"]
    assert f"\nTrained on: {machine['cpu']}, {machine['threads']} thread(s), torch {torch.__version__}.\n" \
        in result["markdown"]
    # running again trains nothing: every (entry, seed) is reused
    messages = []
    with _counting(monkeypatch, "read_yaml") as reads, _counting(monkeypatch, "validate_run") as validations:
        compare(cc, log=messages.append)
    assert len(messages) == 4 and all("reused" in m for m in messages)
    # the run config's YAML is read once for the whole command, each (entry, seed) validated once
    assert (len(reads), len(validations)) == (1, 4)
    # --report: an entry not trained yet is left out of the table, named under it, and not trained
    later = _cc(tmp_path, [*cc.model_dump()["entries"], {"name": "later", "set": ["optim.lr=0.5"]}])
    messages = []
    report = compare(later, log=messages.append, report_only=True)
    assert [r["method"] for r in report["rows"]] == ["base", "sad"]
    assert "Not finished yet (segkd compare trains them): later (0 of 2 seeds)." in report["markdown"]
    one_more = _cc(tmp_path, [*cc.model_dump()["entries"][:1], {**cc.model_dump()["entries"][1], "seeds": [1]}])
    assert ", 1-2 seed(s) per row" in compare(one_more, log=lambda *_: None, report_only=True)["markdown"]
    assert messages == ["[later seed 1] not finished, left out", "[later seed 2] not finished, left out"]
    assert not (out / "later").exists()


def test_a_teacher_is_kept_as_weights_only_so_its_students_train_on_another_machine(tmp_path):
    import torch

    from segkd.engine.resume import ResumeError, check_resume
    from segkd.engine.run import load_trained

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "deterministic": False}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "teacher", "role": "teacher"}, {"name": "base"},
                        {"name": "kd", "teacher_from": "teacher", "set": ["distill.methods=[{name: logits_kd}]"]}],
             seeds=(1,))
    out, messages = tmp_path / "cmp", []
    compare(cc, log=messages.append)
    kept = torch.load(out / "teacher" / "seed1" / "last.pt", weights_only=True)
    assert "optimizer" not in kept and "rng" not in kept and {"config", "model"} <= set(kept)
    assert any(m.startswith("[teacher seed 1] a teacher: last.pt kept as weights only") for m in messages)
    assert "optimizer" in torch.load(out / "base" / "seed1" / "last.pt", weights_only=True)  # not a teacher
    # the record and the kept teacher are what another machine has: its student trains again from them
    teacher_model = load_trained(out / "teacher" / "seed1" / "last.pt")[1].state_dict()
    for path in [*out.rglob("*.pt"), *(out / "kd").rglob("*")]:
        if path.is_file() and path.parent.name == "seed1" and "teacher" not in path.parts:
            path.unlink()
    messages.clear()
    compare(cc, log=messages.append)
    assert "[kd seed 1] training → " + str(out / "kd" / "seed1") in messages
    assert (out / "kd" / "seed1" / "metrics.json").is_file()
    assert not any("kept as weights only" in m for m in messages)  # kept once, left as it is
    again = load_trained(out / "teacher" / "seed1" / "last.pt")[1].state_dict()
    assert all(torch.equal(again[k], v) for k, v in teacher_model.items())
    # a run kept as weights only is never resumed: one line says so
    with pytest.raises(ResumeError, match="weights only .no optimizer state., so it cannot be resumed"):
        check_resume(load_trained(out / "teacher" / "seed1" / "last.pt")[0], out / "teacher" / "seed1" / "last.pt")


def test_teacher_seed_keeps_the_teacher_run_when_the_seeds_are_overridden(tmp_path):
    from segkd.commands.compare import load_compare_config, run_configs, runs_of

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "deterministic": False}), tmp_path / "run.yaml")
    kd = {"name": "kd", "teacher_from": "base", "set": ["distill.methods=[{name: logits_kd}]"]}
    out = tmp_path / "cmp"
    # the default: the teacher entry's first seed, which a seeds override moves
    moved = run_configs(_cc(tmp_path, [{"name": "base"}, kd], seeds=(3,)))
    assert moved[("kd", 3)].distill.teacher.checkpoint == out / "base" / "seed3" / "last.pt"
    # teacher_seed pins it: the teacher's run is trained too (its seed added), every seed distils from it
    cc = _cc(tmp_path, [{"name": "base"}, {**kd, "teacher_seed": 1}], seeds=(3, 4))
    assert cc.seeds_of(cc.entry("base")) == [3, 4, 1] and cc.seeds_of(cc.entry("kd")) == [3, 4]
    assert [(e.name, s) for e, s in runs_of(cc)] == [("base", 3), ("base", 4), ("base", 1), ("kd", 3), ("kd", 4)]
    configs = run_configs(cc)
    assert {configs[("kd", seed)].distill.teacher.checkpoint for seed in (3, 4)} == {out / "base" / "seed1" / "last.pt"}
    with pytest.raises(ValueError, match="entry 'x': teacher_seed 1 without teacher_from"):
        _cc(tmp_path, [{"name": "base"}, {"name": "x", "teacher_seed": 1}])
    # trained: the teacher run first, kept as weights only, its student distilled from it
    messages = []
    compare(_cc(tmp_path, [{"name": "base"}, {**kd, "teacher_seed": 1}], seeds=(2,)), log=messages.append)
    assert (out / "base" / "seed1" / "metrics.json").is_file() and (out / "kd" / "seed2" / "metrics.json").is_file()
    assert "optimizer" not in torch.load(out / "base" / "seed1" / "last.pt", weights_only=True)
    assert "optimizer" in torch.load(out / "base" / "seed2" / "last.pt", weights_only=True)  # not the teacher
    # the shipped search whose seeds were split over invocations keeps its seed-1 teacher
    search = load_compare_config("search_sd_horses", ["seeds=[3]"])
    teachers = {run_configs(search)[(name, 3)].distill.teacher.checkpoint for name in ("tfkd_lr04", "tfkd_lr16")}
    assert teachers == {search.output_dir / "e30_lr16" / "seed1" / "last.pt"}


def test_a_study_kept_as_its_records_alone_is_reused_and_reported(tmp_path, monkeypatch):
    from segkd.commands import compare_report, plots

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "deterministic": False}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "sad", "set": ["distill.methods=[{name: sad, start: 0.0}]"]}],
             seeds=(1,))
    out = tmp_path / "cmp"
    before = {r["method"]: r for r in compare(cc, log=lambda *_: None)["rows"]}
    # what a study keeps under version control: each run's config.yaml, metrics.json and history.jsonl
    for checkpoint in (out / "sad").rglob("*.pt"):
        checkpoint.unlink()
    drawn = {}
    real_grid, real_pr = plots.plot_qualitative_grid, plots.plot_pr_curves

    def grid(rows, columns, path):
        drawn["grid"] = columns
        return real_grid(rows, columns, path)

    def pr_curves(curves, path):
        drawn["pr"] = [*curves]
        return real_pr(curves, path)

    monkeypatch.setattr(plots, "plot_qualitative_grid", grid)
    monkeypatch.setattr(plots, "plot_pr_curves", pr_curves)
    messages = []
    report = compare(cc, log=messages.append)
    assert drawn == {"grid": ["image", "ground truth", "base"], "pr": ["base"]}  # the trained model alone
    assert messages == ["[base seed 1] finished earlier with the same config, reused",
                        "[sad seed 1] finished earlier with the same config, reused"]
    after = {r["method"]: r for r in report["rows"]}
    for column in ("MAE", "params_M", "GFLOPs", "loss_terms", "per_seed"):  # its cost: the model its config builds
        assert after["sad"][column] == before["sad"][column], column
    assert "Reused from their records alone (config.yaml, metrics.json, history.jsonl; no checkpoint kept): sad." \
        in report["markdown"]
    assert (out / "predictions" / "base").is_dir() and (out / "qualitative.png").is_file()
    # with no checkpoint at all the tables are still written, and no prediction figure is left
    for checkpoint in out.rglob("*.pt"):
        checkpoint.unlink()
    report = compare(cc, log=lambda *_: None, report_only=True)
    assert "no checkpoint kept): base, sad." in report["markdown"] and (out / "results.md").is_file()
    assert not any((out / name).exists() for name in ("qualitative.png", "pr_curves.png", "f_threshold.png"))
    assert (out / "training_curves.png").is_file()
    # a model its config cannot build here (say, its weights' package is missing): no cost, said why
    monkeypatch.setattr(compare_report, "build_model", lambda *a, **k: (_ for _ in ()).throw(ValueError("no file")))
    rows = {r["method"]: r for r in compare(cc, log=lambda *_: None, report_only=True)["rows"]}
    assert "params_M" not in rows["sad"] and rows["sad"]["MAE"] == before["sad"]["MAE"]
    assert "sad: no cost columns (its model could not be built from its config here: ValueError: no file)." \
        in (out / "results.md").read_text()


def test_teacher_cache_auto_is_one_folder_per_teacher_entry_for_every_seed():
    from segkd.commands.compare import load_compare_config, run_configs

    cc = load_compare_config("compare_sbg_cached")
    configs = run_configs(cc)
    caches = {(entry.name, seed): configs[(entry.name, seed)].distill.teacher
              for entry in cc.entries if entry.teacher_from for seed in cc.seeds}
    assert {caches[("kd_cached", seed)].cache for seed in cc.seeds} == {cc.output_dir / "teacher_cache" / "teacher"}
    assert all(caches[("kd", seed)].cache is None for seed in cc.seeds)  # the live entry runs its teacher
    assert caches[("kd_cached", 1)].checkpoint == caches[("kd", 1)].checkpoint
    multiscale = caches[("kd_cached_multiscale", 1)]  # other views: its own folder, its views kept
    assert multiscale.cache == cc.output_dir / "teacher_cache" / "teacher-scales0.75_1_1.25_1.5-flip"
    assert (multiscale.cache_scales, multiscale.cache_flip) == ([0.75, 1.0, 1.25, 1.5], True)


def test_a_run_config_depends_on_its_entry_and_the_entries_it_needs_alone():
    from segkd.commands.compare import load_compare_config, run_configs, runs_of

    cc = load_compare_config("compare_sbg_cached")  # teacher entries, cached and live, several views
    at_once = run_configs(cc)
    assert list(at_once) == [(entry.name, seed) for entry, seed in runs_of(cc)]

    def needed(entry):  # the entry, and the entries it takes a teacher or times from
        named = [entry.teacher_from, *((entry.matched_time.of, entry.matched_time.from_) if entry.matched_time else ())]
        return {entry.name}.union(*(needed(cc.entry(name)) for name in named if name))

    for entry in cc.entries:  # resolved in a comparison of that entry (and those it needs) alone: the same runs
        kept = [e for e in cc.entries if e.name in needed(entry)]
        alone = run_configs(cc.model_copy(update={"entries": kept, "baseline": entry.name}))
        for seed in cc.seeds_of(entry):
            assert alone[(entry.name, seed)].to_dict() == at_once[(entry.name, seed)].to_dict(), (entry.name, seed)
    # an entry without seeds of its own takes the comparison's
    assert {seed for name, seed in at_once if name == cc.baseline} == set(cc.seeds_of(cc.entry(cc.baseline)))


def test_the_report_and_the_config_never_import_the_runner():
    folder = Path(compare_config.__file__).parent

    def imported(name):
        tree = ast.parse((folder / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "segkd.commands.compare_runner" not in imported("compare_report")
    assert not {"segkd.commands.compare_runner", "segkd.commands.compare_report"} & imported("compare_config")


def test_runs_side_by_side_give_the_same_results_as_one_after_another(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two jobs: one thread each, as this process has
    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), tmp_path / "run.yaml")
    entries = [{"name": "teacher", "role": "teacher", "seeds": [1]}, {"name": "base"},
               {"name": "kd", "teacher_from": "teacher", "set": ["distill.methods=[{name: logits_kd}]"]}]
    one, two = _cc(tmp_path, entries), _cc(tmp_path, entries).model_copy(update={"jobs": 2})
    two.output_dir = tmp_path / "side_by_side"
    messages = []
    compare(one, log=lambda *_: None)
    compare(two, log=messages.append)
    # a distilled run starts once its teacher is done; every run says when it is done
    assert len([m for m in messages if " done: MAE " in m]) == 5
    teacher_done = messages.index(next(m for m in messages if m.startswith("[teacher seed 1] done")))
    assert all(messages.index(m) > teacher_done for m in messages if m.startswith("[kd seed"))
    for entry in ("teacher", "base", "kd"):
        for seed in ((1,) if entry == "teacher" else (1, 2)):
            a, b = (json.loads((cc.output_dir / entry / f"seed{seed}" / "metrics.json").read_text())
                    for cc in (one, two))
            assert a["student"] == b["student"], (entry, seed)  # one thread each: the same floats


def test_a_worker_whose_comparison_is_gone_stops_as_sigterm_asks():
    import signal
    import subprocess
    import sys

    code = "from segkd.commands.compare_runner import _stop_with_parent; _stop_with_parent(-1, 0.01); input()"
    done = subprocess.run([sys.executable, "-c", code], timeout=120, stdin=subprocess.PIPE)
    assert done.returncode == -signal.SIGTERM


@pytest.mark.parametrize(("setting", "blamed"), [
    ("distill.methods=[{name: nosuch}]", "unknown distillation method 'nosuch'"),
    ("model.name=nosuch", "unknown model 'nosuch'"),
    ("distill.methods=[{name: cwd}]", "method 'cwd' needs a teacher: set distill.teacher"),
])
def test_an_entry_naming_no_registered_model_or_method_stops_the_comparison_before_any_run(
        tmp_path, monkeypatch, setting, blamed):
    from segkd.commands import compare_runner

    save_config(tiny_binary_config(tmp_path), tmp_path / "run.yaml")
    monkeypatch.setattr(compare_runner, "fit", lambda *a, **k: pytest.fail("a run was trained"))
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "bad", "set": [setting]}])
    with pytest.raises(ConfigError) as err:
        compare(cc, log=lambda *_: None)
    message = str(err.value)
    assert message.startswith(f"t: entry 'bad', seed 1: set {setting}: ") and blamed in message
    assert "\n" not in message  # one line, naming the entry and its `set` item
    assert not (tmp_path / "cmp").exists()


def test_compare_given_a_run_config_names_the_file_and_segkd_train(tmp_path, capsys):
    from segkd.cli import main
    from segkd.commands.compare import load_compare_config

    save_config(tiny_binary_config(tmp_path), tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("kind: run\n" + (tmp_path / "run.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        load_compare_config(tmp_path / "run.yaml")
    assert str(err.value) == (f"{tmp_path / 'run.yaml'}: a run config (kind: run), not a comparison: train it "
                              f"with segkd train {tmp_path / 'run.yaml'}")
    assert main(["compare", "tiny_binary"]) != 0  # a shipped run config, without a kind of its own
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "tiny_binary.yaml: a run config" in line and line.endswith("segkd train tiny_binary")


def test_the_qualitative_figure_of_a_cityscapes_comparison_uses_cityscapes_colours(tmp_path, monkeypatch):
    """The ground truth and each entry's prediction are drawn in the data set's colours, not VOC's."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image
    from torch import nn

    from segkd.commands import compare_report, plots
    from segkd.data.classes import CITYSCAPES_COLORS, voc_palette

    from engine_helpers import tiny_semantic_config

    classes = len(CITYSCAPES_COLORS)
    cfg = tiny_semantic_config(tmp_path, data={"layout": "cityscapes", "root": str(tmp_path / "cityscapes"),
                                               "crop_size": 38, "base_size": 76})
    bands = (np.arange(76)[None, :] * classes // 76).repeat(19, axis=0).astype(np.uint8)  # every class
    Image.fromarray(np.zeros((19, 76, 3), np.uint8)).save(tmp_path / "street.png")
    Image.fromarray(bands).save(tmp_path / "street_labelTrainIds.png")
    sample = SimpleNamespace(name="street", image=tmp_path / "street.png", mask=tmp_path / "street_labelTrainIds.png")
    monkeypatch.setattr(compare_report, "build_dataset", lambda *a: SimpleNamespace(samples=[sample]))

    def evaluate(model, dataset, cfg, device, save_dir, **_):  # the prediction: the ground truth itself
        save_dir.mkdir(parents=True)
        Image.fromarray(bands).save(save_dir / "street.png")
        return {}

    drawn = {}
    monkeypatch.setattr(compare_report, "evaluate_with_config", evaluate)
    monkeypatch.setattr(plots, "plot_metric_bars", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_training_curves", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_qualitative_grid", lambda grid, *a, **k: drawn.setdefault("grid", grid))
    monkeypatch.setattr(compare_report, "_history", lambda *a: {})
    cc = SimpleNamespace(output_dir=tmp_path / "cmp", qualitative_images=1)
    compare_report.make_plots(cc, [{"method": "kd", "mIoU": 0.5}], {"kd": cfg}, {"kd": cfg},
                              {"kd": nn.Conv2d(1, 1, 1)}, "semantic", "mIoU")
    [row] = drawn["grid"]
    expected = np.asarray(CITYSCAPES_COLORS, np.uint8)[bands]
    for column in ("ground truth", "kd"):
        np.testing.assert_array_equal(row[column], expected)
    assert (expected != np.asarray(voc_palette(), np.uint8).reshape(256, 3)[bands]).any()  # VOC's would fail


def test_loss_terms_average_the_last_tenth_of_each_run_then_the_seeds(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "kd"}])
    configs = {}
    for seed, scale in ((1, 1.0), (2, 3.0)):
        run_dir = tmp_path / f"kd{seed}"
        run_dir.mkdir()
        records = [{"iteration": i, "train": {"task": scale * i, "kd": 0.05, "total": scale * i + 0.05}, "lr": 0.1}
                   for i in range(1, 21)]
        records.insert(5, {"iteration": 5, "val": {"MAE": 0.2}})  # validation records are not training terms
        (run_dir / "history.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        configs[("kd", seed)] = type("Cfg", (), {"run_dir": run_dir})
    terms = loss_terms(cc, configs, {"base": {}, "kd": {1: {}, 2: {}}})
    # last tenth of 20 logged iterations: 19 and 20, task 19.5 (seed 1) and 58.5 (seed 2)
    assert terms == {"kd": {"task": pytest.approx(39.0), "kd": pytest.approx(0.05), "total": pytest.approx(39.05)}}
    # a small share keeps its digits instead of showing as 0 %
    assert "| kd | task 39 (100 %) · kd 0.05 (0.13 %) | 39.05 |" in format_terms(terms)


def test_head_scores_average_each_head_over_the_seeds_that_scored_it(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "dks"}])
    results = {"base": {1: {"student": {"MAE": 0.2}}, 2: {"student": {"MAE": 0.3}}},
               "dks": {1: {"student": {"MAE": 0.20}, "heads": {"dks/branch@stage2": {"MAE": 0.30},
                                                               "dks/branch@stage3": {"MAE": 0.26}}},
                       2: {"student": {"MAE": 0.24}, "heads": {"dks/branch@stage2": {"MAE": 0.34},
                                                               "dks/branch@stage3": {"MAE": 0.28}}}}}
    scores = head_scores(cc, results, "MAE")
    assert scores == {"dks": {"out": pytest.approx(0.22), "dks/branch@stage2": pytest.approx(0.32),
                              "dks/branch@stage3": pytest.approx(0.27)}}  # the baseline has no heads
    assert "| dks | 0.2200 | branch@stage2 0.3200 · branch@stage3 0.2700 |" in format_heads(scores, "MAE")
    assert format_heads({}, "MAE") == ""
    # the bar a head must pass: the baseline's own score, named beside the table
    assert "The baseline (base, trained alone) scores 0.2500" in format_heads(scores, "MAE", ("base", 0.25))
    assert "trained alone" not in format_heads(scores, "MAE")


def test_a_diverged_run_does_not_stop_the_others_and_is_named_at_the_end(tmp_path, monkeypatch):
    from segkd.commands import compare_runner
    from segkd.commands.compare import RunsDiverged
    from segkd.engine.errors import NonFiniteLossError

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "deterministic": False}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "wild", "role": "teacher"},
                        {"name": "taught", "teacher_from": "wild", "set": ["distill.methods=[{name: tfkd}]"]},
                        {"name": "after"}], seeds=(1,))
    real = compare_runner._fit_in_worker

    def diverging(cfg):
        if cfg.name == "wild":
            raise NonFiniteLossError("loss is nan at iteration 1 (epoch 0): task=nan. Stopped; ...")
        return real(cfg)

    monkeypatch.setattr(compare_runner, "_fit_in_worker", diverging)
    logged = []
    with pytest.raises(RunsDiverged, match=r"2 run\(s\) did not finish: wild seed 1: loss is nan at iteration 1 "
                                           r"\(epoch 0\); taught seed 1: waits for 'wild', which diverged"):
        compare(cc, log=logged.append)
    # the runs after the failure were trained and tabled
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [r["method"] for r in rows] == ["base", "after"]
    assert any("[wild seed 1] diverged, the comparison goes on without it" in line for line in logged)
    # a diverged baseline leaves no table: the message says so instead of pointing at one
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "after"}], seeds=(1,)).model_copy(
        update={"output_dir": tmp_path / "cmp2"})  # a new folder: nothing finished earlier is reused
    monkeypatch.setattr(compare_runner, "_fit_in_worker", lambda cfg: diverging(
        cfg.model_copy(update={"name": "wild"})) if cfg.name == "base" else real(cfg))
    with pytest.raises(RunsDiverged, match=r"the other runs are trained, but no table was written \(.*'base'"):
        compare(cc, log=logged.append)


def test_per_seed_table_pairs_each_row_with_the_baselines_run_of_the_same_seed(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "kd"}, {"name": "other"}], seeds=(1, 2, 3))
    results = {"base": {1: _result(0.20), 2: _result(0.30), 3: _result(0.25)},
               "kd": {1: _result(0.18), 2: _result(0.29), 3: _result(0.22), 4: _result(0.5)},
               "other": {5: _result(0.1)}}
    values = per_seed(cc, results, "MAE")
    assert values["kd"] == {1: 0.18, 2: 0.29, 3: 0.22, 4: 0.5}
    # seeds 1-3 in common: differences −0.02, −0.01, −0.03; mean −0.02, s_d 0.01, 2 SE 2·0.01/sqrt(3)
    mean, spread, n = paired_gain(values["kd"], values["base"])
    assert (mean, spread, n) == (pytest.approx(-0.02), pytest.approx(0.0115470, rel=1e-5), 3)
    assert paired_gain(values["other"], values["base"]) == (None, None, 0)
    assert paired_gain({1: 0.1}, {1: 0.3}) == (pytest.approx(-0.2), None, 1)
    paired = paired_gains(values, "base")
    assert set(paired) == {"kd", "other"} and paired["kd"] == (mean, spread, n)
    table = format_per_seed(values, paired, "base", "MAE")
    header = "| method | seed 1 | seed 2 | seed 3 | seed 4 | seed 5 | paired gain | 2 SE (paired) | common seeds |"
    assert header in table
    assert "| kd | 0.1800 | 0.2900 | 0.2200 | 0.5000 | - | -0.0200 | 0.0115 | 3 |" in table
    assert "| base | 0.2000 | 0.3000 | 0.2500 | - | - | - | - | - |" in table
    assert "| other | - | - | - | - | 0.1000 | - | - | 0 |" in table
    # a teacher is trained on its own data and config: its seed is no pair for the student's
    teacher = paired_gains(values, "base", unpaired=frozenset({"kd"}))
    assert "kd" not in teacher
    unpaired_row = "| kd | 0.1800 | 0.2900 | 0.2200 | 0.5000 | - | - | - | - |"
    assert unpaired_row in format_per_seed(values, teacher, "base", "MAE")
    # while the baseline has no finished run, no row has a paired gain and there is no table
    early = {"kd": values["kd"]}
    assert paired_gains(early, "base") == {} and format_per_seed(early, {}, "base", "MAE") == ""


def test_runs_from_several_set_ups_are_named_with_their_entries(tmp_path):
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "kd"}], seeds=(1, 2))
    here = {"torch": "2.0", "device": "cpu", "cpu": "CPU A", "threads": 1, "processes": 1}
    there = {**here, "threads": 2}
    results = {"base": {1: {**_result(0.2), "machine": here}, 2: {**_result(0.2), "machine": there}},
               "kd": {1: {**_result(0.1), "machine": here}, 2: _result(0.1)}}  # seed 2: a run of an older version
    text = format_machines(cc, results)
    assert text.startswith("\nTrained on 3 set-ups (the same seed gives other floats on each")
    assert "- CPU A, 1 thread(s), torch 2.0: base, kd\n" in text and "- CPU A, 2 thread(s), torch 2.0: base\n" in text
    assert "- not recorded: kd\n" in text
    gpu = {**here, "device": "cuda:0", "gpu": "GPU B", "processes": 4}
    assert format_machines(cc, {"base": {1: {"machine": gpu}}, "kd": {}}) == \
        "\nTrained on: GPU B, 1 thread(s) × 4 processes, torch 2.0.\n"
