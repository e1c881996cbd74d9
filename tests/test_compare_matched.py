"""segkd compare's matched_time entry: a student alone trained for the wall-clock of another entry's runs."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from segkd.commands import compare_runner
from segkd.commands.compare import CompareConfig, compare, run_configs, validate_compare
from segkd.commands.compare_config import matched_config, matched_epochs, with_matched
from segkd.config import ConfigError, save_config

from engine_helpers import tiny_binary_config


def _cc(tmp_path, entries, seeds=(1, 2), **more):
    return CompareConfig.model_validate({
        "name": "t", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"),
        "seeds": list(seeds), "baseline": "base", "entries": entries, "qualitative_images": 1, **more,
    })


MATCHED = {"name": "matched", "matched_time": {"of": "long", "from": "base"}}


def _finish(cc, name, seed, seconds):
    """A finished run of (name, seed) as its metrics.json says, which took ``seconds`` to train."""
    run_dir = cc.output_dir / name / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"student": {"MAE": 0.1}, "train_seconds": seconds}))


def test_the_matched_epochs_are_the_from_epochs_scaled_by_the_stored_train_times(tmp_path):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 2, "val_every": 2, "max_iters": 4}),
                tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "long", "set": ["optim.lr=0.02"], "seeds": [1, 2, 3]}, MATCHED])
    configs = run_configs(cc)
    entry = cc.entry("matched")
    # before its epochs are known it resolves as the from entry, in its own folder
    assert configs[("matched", 1)].train.epochs == 2 and configs[("matched", 1)].optim.lr == 0.01
    assert configs[("matched", 1)].run_dir == cc.output_dir / "matched" / "seed1"
    _finish(cc, "base", 1, 18.0)
    _finish(cc, "base", 2, 22.0)  # T_from: 20
    _finish(cc, "long", 1, 25.0)
    _finish(cc, "long", 2, 35.0)
    assert matched_epochs(cc, entry, configs) is None  # long's seed 3 is not finished: it waits
    assert with_matched(cc, configs).waiting == {"matched"}
    assert with_matched(cc, configs).configs[("matched", 2)].train.epochs == 2
    _finish(cc, "long", 3, 30.0)  # T_of: 30 over all its seeds
    assert matched_epochs(cc, entry, configs) == 3  # round(2 * 30 / 20)
    cfg = matched_config(cc, entry, 2, configs, 3)
    # validated at its end as the from entry is; the iteration cap grows as the epochs; from's LR, not long's
    assert (cfg.train.epochs, cfg.train.val_every, cfg.train.max_iters, cfg.train.seed) == (3, 3, 6, 2)
    assert cfg.optim.lr == 0.01 and cfg.schedule == configs[("base", 2)].schedule  # same warm-up fraction
    resolved = with_matched(cc, configs)
    assert resolved.waiting == frozenset() and resolved.configs[("matched", 1)].train.epochs == 3
    assert resolved.configs[("matched", 2)].to_dict() == cfg.to_dict()
    _finish(cc, "base", 2, None)  # a run of an older version, which did not store its time
    with pytest.raises(ConfigError, match=r"base/seed2/metrics.json: no train_seconds .* entry 'matched'"):
        matched_epochs(cc, entry, configs)


def test_with_teacher_counts_the_training_of_the_self_teacher_too(tmp_path):
    # Tf-KD's self-teacher is the baseline trained once more: a user who wants Tf-KD trains both
    save_config(tiny_binary_config(tmp_path, train={"epochs": 4, "val_every": 4}), tmp_path / "run.yaml")
    matched = {"name": "matched", "matched_time": {"of": "tfkd", "from": "base", "with_teacher": True}}
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "tfkd", "teacher_from": "base"}, matched])
    configs, entry = run_configs(cc), cc.entry("matched")
    for seed, seconds in ((1, 18.0), (2, 22.0)):  # T_base: 20
        _finish(cc, "base", seed, seconds)
        _finish(cc, "tfkd", seed, 25.0)  # T_tfkd: 25
    assert matched_epochs(cc, entry, configs) == 9  # round(4 * (25 + 20) / 20); 5 without the teacher
    cc.entry("matched").matched_time.with_teacher = False
    assert matched_epochs(cc, entry, configs) == 5


def test_with_a_teacher_of_its_own_the_matched_run_waits_for_it_and_counts_it(tmp_path):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 4, "val_every": 4}), tmp_path / "run.yaml")
    matched = {"name": "matched", "matched_time": {"of": "kd", "from": "base", "with_teacher": True}}
    cc = _cc(tmp_path, [{"name": "big", "role": "teacher", "seeds": [1, 2]}, {"name": "base"},
                        {"name": "kd", "teacher_from": "big"}, matched])
    configs, entry = run_configs(cc), cc.entry("matched")
    assert compare_runner.waits_for(cc, entry) == ("kd", "base", "big")
    for seed in (1, 2):
        _finish(cc, "base", seed, 20.0)
        _finish(cc, "kd", seed, 30.0)
    _finish(cc, "big", 1, 50.0)
    assert matched_epochs(cc, entry, configs) is None  # the teacher's seed 2 is not finished
    _finish(cc, "big", 2, 50.0)
    assert matched_epochs(cc, entry, configs) == 16  # round(4 * (30 + 50) / 20)


def test_a_run_slowed_by_other_jobs_does_not_move_the_matched_epochs(tmp_path):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 10, "val_every": 10}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "long"}, MATCHED], seeds=(1, 2, 3))
    configs = run_configs(cc)
    for seed, (base, long) in enumerate([(20.0, 30.0), (21.0, 31.0), (20.5, 30.5)], start=1):
        _finish(cc, "base", seed, base)
        _finish(cc, "long", seed, long)
    assert matched_epochs(cc, cc.entry("matched"), configs) == 15  # round(10 * 30.5 / 20.5)
    _finish(cc, "base", 2, 60.0)  # the same run, timed while another job shared its core
    assert matched_epochs(cc, cc.entry("matched"), configs) == 15  # the mean would give 9


def test_times_measured_on_different_set_ups_are_refused_for_a_matched_row(tmp_path):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 10, "val_every": 10}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "long"}, MATCHED], seeds=(1, 2))
    configs = run_configs(cc)
    here = {"torch": "2.0", "device": "cpu", "cpu": "CPU A", "threads": 1, "processes": 1}

    def finish(name, seed, seconds, machine):
        _finish(cc, name, seed, seconds)
        path = cc.output_dir / name / f"seed{seed}" / "metrics.json"
        report = json.loads(path.read_text())
        path.write_text(json.dumps({**report, "machine": machine} if machine else report))

    for seed in (1, 2):
        finish("base", seed, 20.0, here)
        finish("long", seed, 30.0, here if seed == 1 else None)  # a run of an older version: no record
    assert matched_epochs(cc, cc.entry("matched"), configs) == 15  # one set-up among the records
    finish("long", 2, 20.0, {**here, "cpu": "CPU B"})  # a faster processor: its time does not compare
    with pytest.raises(ConfigError, match=r"entry 'matched' matches training times measured on different set-ups "
                                          r"\(long seed 1, base seed 1, base seed 2 on CPU A, 1 thread\(s\), "
                                          r"torch 2.0; "
                                          r"long seed 2 on CPU B, .*\); train the runs it is timed by on one machine"):
        matched_epochs(cc, cc.entry("matched"), configs)


@pytest.mark.parametrize(("matched", "others", "message"), [
    ({"of": "nosuch", "from": "base"}, [], "entry 'matched': matched_time.of 'nosuch' must be an earlier entry"),
    ({"of": "long", "from": "matched"}, [], "entry 'matched': matched_time.from 'matched' must be an earlier"),
    ({"of": "long", "from": "kd"}, [], "entry 'matched': matched_time.from 'kd' must be a student alone"),
    ({"of": "long", "from": "teacher"}, [], "entry 'matched': matched_time.from 'teacher' must be a student alone"),
    ({"of": "twice", "from": "base"}, [{"name": "twice", "matched_time": {"of": "long", "from": "base"}}],
     "entry 'matched': matched_time.of 'twice' is itself matched"),
    ({"of": "long", "from": "base", "to": "x"}, [], "matched_time.to: Extra inputs are not permitted"),
    ({"of": "long", "from": "base", "with_teacher": True}, [],
     "entry 'matched': matched_time.with_teacher: 'long' has no teacher_from whose training to count"),
])
def test_a_matched_entry_naming_a_wrong_entry_stops_at_load(tmp_path, matched, others, message):
    entries = [{"name": "teacher", "role": "teacher"}, {"name": "base"}, {"name": "long"},
               {"name": "kd", "teacher_from": "teacher"}, *others, {"name": "matched", "matched_time": matched}]
    raw = {"run_config": "tiny_binary", "output_dir": "out", "baseline": "base", "entries": entries}
    with pytest.raises(ConfigError) as err:
        validate_compare(raw, "c.yaml")
    assert message in str(err.value) and len(str(err.value).splitlines()) == 2  # the file, then one line


def test_a_matched_entry_sets_nothing_of_its_own(tmp_path):
    raw = {"run_config": "tiny_binary", "output_dir": "out", "baseline": "base",
           "entries": [{"name": "base"}, {"name": "long"}, {**MATCHED, "set": ["optim.lr=0.5"]}]}
    with pytest.raises(ConfigError, match="entry 'matched': an entry with matched_time trains the config of 'base'"):
        validate_compare(raw, "c.yaml")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_matched_run_waits_for_both_entries_then_is_reused(tmp_path, monkeypatch, jobs):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two jobs: one thread each
    save_config(tiny_binary_config(tmp_path, train={"epochs": 1, "val_every": 1, "deterministic": False}),
                tmp_path / "run.yaml")
    entries = [{"name": "base"}, {"name": "long", "set": ["train.epochs=3"]}, MATCHED]
    cc = _cc(tmp_path, entries, seeds=(1,), jobs=jobs)
    messages = []
    result = compare(cc, log=messages.append)
    started = messages.index(next(m for m in messages if m.startswith("[matched seed 1] training")))
    for name in ("base", "long"):  # both entries' runs were trained side by side before it started
        assert messages.index(next(m for m in messages if m.startswith(f"[{name} seed 1] done"))) < started
    times = {name: json.loads((cc.output_dir / name / "seed1" / "metrics.json").read_text())["train_seconds"]
             for name in ("base", "long")}
    epochs = max(1, round(1 * times["long"] / times["base"]))
    stored = yaml.safe_load((cc.output_dir / "matched" / "seed1" / "config.yaml").read_text())
    assert (stored["train"]["epochs"], stored["train"]["val_every"]) == (epochs, epochs)
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["matched"]["epochs"] == epochs and rows["long"]["epochs"] == 3 and "gain" in rows["matched"]
    assert "| matched | 1 |" in result["markdown"]
    assert f"matched: base alone at the training wall-clock of long: {epochs} epochs (base: 1;" in result["markdown"]
    assert "long against matched: " in result["markdown"] and "significant: unknown (1 seed)" in result["markdown"]
    # a rerun resolves the same epochs from the stored times and trains nothing
    monkeypatch.setattr(compare_runner, "fit", lambda *a, **k: pytest.fail("a run was trained"))
    messages = []
    again = compare(cc, log=messages.append)
    assert len(messages) == 3 and all("reused" in m for m in messages)
    assert {r["method"]: r["epochs"] for r in again["rows"]}["matched"] == epochs
    # long trained with another config: the matched run would be retrained after it
    longer = _cc(tmp_path, [entries[0], {"name": "long", "set": ["train.epochs=4"]}, MATCHED], seeds=(1,))
    assert compare_runner.stale_runs(longer)[("matched", 1)] == ["entry 'long', which it waits for, is retrained"]
    # once long has a run unfinished, the matched run's epochs are unknown: not stale, but left out of a report
    (cc.output_dir / "long" / "seed1" / "metrics.json").unlink()
    assert compare_runner.stale_runs(cc) == {}
    messages = []
    assert compare_runner.train_all(cc, log=messages.append, report_only=True).results["matched"] == {}
    assert "[matched seed 1] its epochs wait for unfinished runs of 'long' or 'base', left out" in messages


def _fake_fit(seconds, trained):
    """Training stood in for: the run's config.yaml, and a metrics.json saying it took ``seconds[(name, seed)]``."""
    def fit(cfg, resume=False):
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg.run_dir / "config.yaml")
        report = {"student": {"MAE": 0.1}, "train_seconds": seconds[(cfg.name, cfg.train.seed)]}
        (cfg.run_dir / "metrics.json").write_text(json.dumps(report))
        trained.append((cfg.name, cfg.train.seed))
        return report

    return fit


def _stored_epochs(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"]


@pytest.mark.parametrize(("added_seconds", "retrain", "outcome"), [
    (20.0, False, "reused"),     # long's mean stays 20 s: round(2 * 20 / 10) = 4 epochs, as before
    (40.0, False, "refused"),    # 30 s: 6 epochs
    (40.0, True, "retrained"),
])
def test_a_seed_added_to_the_of_entry_is_trained_then_the_matched_run_judged(
        tmp_path, monkeypatch, added_seconds, retrain, outcome):
    save_config(tiny_binary_config(tmp_path, train={"epochs": 2, "val_every": 2}), tmp_path / "run.yaml")
    trained = []
    seconds = {("base", 1): 10.0, ("long", 1): 20.0, ("long", 2): added_seconds, ("matched", 1): 20.0}
    monkeypatch.setattr(compare_runner, "fit", _fake_fit(seconds, trained))
    compare_runner.train_all(_cc(tmp_path, [{"name": "base"}, {"name": "long"}, MATCHED], seeds=(1,)),
                             log=lambda *_: None)
    matched_dir = tmp_path / "cmp" / "matched" / "seed1"
    assert trained == [("base", 1), ("long", 1), ("matched", 1)] and _stored_epochs(matched_dir) == 4
    trained.clear()
    more = _cc(tmp_path, [{"name": "base"}, {"name": "long", "seeds": [1, 2]}, MATCHED], seeds=(1,))
    assert compare_runner.stale_runs(more) == {}  # its epochs wait for long's new seed: not judged yet
    messages = []
    if outcome == "refused":
        with pytest.raises(ConfigError, match=r"1 finished or started run\(s\) .*\n  matched seed 1: "
                                              r"train.epochs: 4 → 6") as err:
            compare_runner.train_all(more, log=messages.append)
        assert "--retrain" in str(err.value)
        assert trained == [("long", 2)] and _stored_epochs(matched_dir) == 4  # the new seed trained, the run kept
        return
    result = compare_runner.train_all(more, log=messages.append, retrain=retrain)
    set_aside = list(matched_dir.parent.glob("seed1.replaced-*"))
    if outcome == "reused":
        assert trained == [("long", 2)] and not set_aside
        assert "[matched seed 1] finished earlier with the same config (4 epochs), reused" in messages
    else:
        assert trained == [("long", 2), ("matched", 1)] and _stored_epochs(matched_dir) == 6
        assert len(set_aside) == 1 and _stored_epochs(set_aside[0]) == 4  # the old run kept beside it
    epochs = 4 if outcome == "reused" else 6
    assert result.configs[("matched", 1)].train.epochs == epochs and set(result.results["matched"]) == {1}


def test_runs_side_by_side_that_are_all_reused_start_no_process():
    from types import SimpleNamespace

    reused = [compare_runner.Run(name, 1, SimpleNamespace(), waits, lambda: (SimpleNamespace(), False))
              for name, waits in (("a", ()), ("b", ("a",)), ("c", ("a", "b")))]
    messages = []
    compare_runner.train_runs(reused, jobs=2, log=messages.append)
    assert messages == [] and all(run.resolve is None for run in reused)


def test_the_footnote_gives_the_matched_entrys_verdict_against_the_matched_row():
    from types import SimpleNamespace

    from segkd.commands import compare_report

    cc = validate_compare({"run_config": "tiny_binary", "output_dir": "out", "baseline": "base", "seeds": [1, 2, 3],
                           "entries": [{"name": "base"}, {"name": "long"}, MATCHED]}, "c.yaml")
    configs = {(name, seed): SimpleNamespace(train=SimpleNamespace(epochs=epochs))
               for name, epochs in (("base", 2), ("long", 2), ("matched", 3)) for seed in (1, 2, 3)}
    rows = [{"method": "base", "seeds": 3, "mIoU": 0.50, "mIoU_std": 0.01},
            {"method": "long", "seeds": 3, "mIoU": 0.56, "mIoU_std": 0.01},
            {"method": "matched", "seeds": 3, "mIoU": 0.53, "mIoU_std": 0.02}]
    note = compare_report._matched_note(cc, cc.entry("matched"), configs, rows, "mIoU")
    # 2 SE = 2 * sqrt(0.01^2 / 3 + 0.02^2 / 3) = 0.0258: +0.03 is beyond it
    assert "3 epochs (base: 2;" in note
    assert note.endswith("long against matched: +0.0300 mIoU, 2 SE 0.0258, significant: yes (better).")
    rows[1]["mIoU"] = 0.55  # +0.02: within
    assert compare_report._matched_note(cc, cc.entry("matched"), configs, rows, "mIoU").endswith(
        "+0.0200 mIoU, 2 SE 0.0258, significant: no (within 2 SE).")


def test_the_footnote_gives_the_share_of_the_teachers_lead_over_the_matched_row_closed():
    from types import SimpleNamespace

    from segkd.commands import compare_report

    cc = validate_compare({"run_config": "tiny_binary", "output_dir": "out", "baseline": "base", "seeds": [1, 2, 3],
                           "entries": [{"name": "teacher", "role": "teacher", "seeds": [1]}, {"name": "base"},
                                       {"name": "long", "teacher_from": "teacher"}, MATCHED]}, "c.yaml")
    configs = {(name, seed): SimpleNamespace(train=SimpleNamespace(epochs=2))
               for name in ("teacher", "base", "long", "matched") for seed in (1, 2, 3)}
    rows = [{"method": "teacher", "role": "teacher", "seeds": 1, "mIoU": 0.60, "mIoU_std": None},
            {"method": "base", "role": None, "seeds": 3, "mIoU": 0.50, "mIoU_std": 0.01},
            {"method": "long", "role": None, "seeds": 3, "mIoU": 0.56, "mIoU_std": 0.01},
            {"method": "matched", "role": None, "seeds": 3, "mIoU": 0.52, "mIoU_std": 0.01}]
    note = compare_report._matched_note(cc, cc.entry("matched"), configs, rows, "mIoU")
    # (0.56 - 0.52) / (0.60 - 0.52) = 50 %
    assert note.endswith("significant: yes (better), 50 % of the teacher's lead over matched closed.")
    rows[0]["mIoU"] = 0.51  # a teacher behind the matched student has no lead to close
    assert compare_report._matched_note(cc, cc.entry("matched"), configs, rows, "mIoU").endswith(
        "significant: yes (better).")


def test_runs_train_in_the_configs_order_each_after_the_entries_it_waits_for(tmp_path, monkeypatch):
    """An entry awaited by a later one is not pulled ahead of the entries listed before it: a student
    listed right after its teacher trains while the teacher's checkpoint is at hand."""
    from segkd.commands import compare_runner

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "kd", "teacher_from": "base"}, {"name": "other"},
                        {"name": "long", "set": ["train.epochs=2"]}, MATCHED], seeds=(1,))
    order = []
    monkeypatch.setattr(compare_runner, "train_runs",
                        lambda runs, jobs, log: order.extend(run.name for run in runs) or [])
    compare_runner.train_all(cc, log=lambda *_: None)
    assert order == ["base", "kd", "other", "long", "matched"]


def test_only_trains_the_entries_named_and_those_they_wait_for(tmp_path, monkeypatch):
    """``segkd compare --only``: a long study trains some rows now; the runs of the others are neither
    trained nor refused when stale, and the tables still hold every run finished with the current config."""
    from segkd.commands import compare_runner

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), tmp_path / "run.yaml")
    cc = _cc(tmp_path, [{"name": "base"}, {"name": "kd", "teacher_from": "base"}, {"name": "other"},
                        {"name": "long", "set": ["train.epochs=2"]}, MATCHED], seeds=(1,))
    seconds = {(name, 1): 10.0 for name in ("base", "kd", "other", "long", "matched")}
    trained = []
    monkeypatch.setattr(compare_runner, "fit", _fake_fit(seconds, trained))
    stale_dir = cc.output_dir / "other" / "seed1"  # a run of 'other' trained with another config
    stale_dir.mkdir(parents=True)
    stored = compare_runner.run_configs(cc)[("other", 1)].to_dict()
    stored["train"]["epochs"] = 5
    (stale_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    (stale_dir / "metrics.json").write_text(json.dumps({"student": {"MAE": 0.5}, "train_seconds": 1.0}))
    messages = []
    result = compare_runner.train_all(cc, log=messages.append, only=["kd"])
    assert trained == [("base", 1), ("kd", 1)]  # kd and the teacher it waits for, in the config's order
    assert set(result.results["base"]) == set(result.results["kd"]) == {1}
    assert result.results["other"] == {} and "[other seed 1] trained with another config, left out" in messages
    assert stale_dir.is_dir()  # left as it was, not moved aside
    trained.clear()
    result = compare_runner.train_all(cc, log=messages.append, only=["matched"])
    assert trained == [("long", 1), ("matched", 1)]  # base finished earlier: reused
    assert set(result.results["matched"]) == {1}
    with pytest.raises(ConfigError, match=r"^--only nosuch: t has no such entry; its entries: base, kd, other, long"):
        compare_runner.train_all(cc, only=["nosuch"])


def test_only_with_retrain_refuses_to_leave_runs_waiting_for_an_entry_it_retrains(tmp_path, monkeypatch):
    from segkd.commands import compare_runner

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), tmp_path / "run.yaml")
    entries = [{"name": "base"}, {"name": "kd", "teacher_from": "base"}, {"name": "other"}]
    trained = []
    monkeypatch.setattr(compare_runner, "fit", _fake_fit({(n, 1): 1.0 for n in ("base", "kd", "other")}, trained))
    compare_runner.train_all(_cc(tmp_path, entries, seeds=(1,)), log=lambda *_: None)
    changed = _cc(tmp_path, [{"name": "base", "set": ["train.epochs=2"]}, *entries[1:]], seeds=(1,))
    with pytest.raises(ConfigError, match=r"^--only with --retrain: the runs of kd wait for entries retrained here; "
                                          r"add kd to --only$"):
        compare_runner.train_all(changed, log=lambda *_: None, retrain=True, only=["base"])
    trained.clear()
    compare_runner.train_all(changed, log=lambda *_: None, retrain=True, only=["kd"])
    assert trained == [("base", 1), ("kd", 1)]  # kd waits for base: both trained again


def test_only_says_when_the_table_waits_for_a_row_not_trained(tmp_path, monkeypatch):
    from segkd.commands import compare_runner

    save_config(tiny_binary_config(tmp_path, train={"epochs": 1}), tmp_path / "run.yaml")
    monkeypatch.setattr(compare_runner, "fit", _fake_fit({("other", 1): 1.0}, []))
    result = compare(_cc(tmp_path, [{"name": "base"}, {"name": "other"}], seeds=(1,)), log=lambda *_: None,
                     only=["other"])
    assert result["markdown"].startswith("other: trained; no table yet: ") and "'base'" in result["markdown"]
    assert (tmp_path / "cmp" / "other" / "seed1" / "metrics.json").is_file()


def test_the_tables_train_minutes_are_the_median_over_seeds(tmp_path):
    # the same statistic as the matched epochs: a run timed while another job shared its core does not move it
    from segkd.commands.compare_report import summarise

    cc = _cc(tmp_path, [{"name": "base"}], seeds=(1, 2, 3))
    times = {1: 60.0, 2: 62.0, 3: 300.0}
    results = {"base": {seed: {"student": {"MAE": 0.1}, "train_seconds": t} for seed, t in times.items()}}
    assert summarise(cc, results, "binary")[0]["train_s"] == 62.0


def test_a_run_skipped_for_a_diverged_teacher_skips_the_matched_runs_timed_by_it():
    # before, the matched run was started, found no metrics for its entry and raised
    outcomes = compare_runner._Outcomes(log=lambda line: None)
    outcomes.failed.add("teacher")  # its run diverged
    kd = compare_runner.Run("kd", 1, None, ("teacher",))
    matched = compare_runner.Run("matched", 1, None, ("kd", "base"))
    assert outcomes.skipped(kd) and outcomes.skipped(matched)
    assert outcomes.diverged == ["kd seed 1: waits for 'teacher', which diverged",
                                 "matched seed 1: waits for 'kd', which was not trained: it waits for a run that "
                                 "diverged"]
    outcomes.failed.add("long")  # a run of it diverged too: named as the cause, before 'kd' in the alphabet
    assert outcomes.skipped(compare_runner.Run("matched", 2, None, ("kd", "long")))
    assert outcomes.diverged[-1] == "matched seed 2: waits for 'long', which diverged"


def test_a_matched_run_skipped_for_a_diverged_seed_does_not_report_its_earlier_epochs(tmp_path, monkeypatch):
    # its metrics.json holds the epochs of long's first seed alone: not the run the current config asks for
    from segkd.engine.errors import NonFiniteLossError

    save_config(tiny_binary_config(tmp_path, train={"epochs": 2, "val_every": 2}), tmp_path / "run.yaml")
    trained = []
    seconds = {("base", 1): 10.0, ("long", 1): 20.0, ("matched", 1): 20.0}
    monkeypatch.setattr(compare_runner, "fit", _fake_fit(seconds, trained))
    compare_runner.train_all(_cc(tmp_path, [{"name": "base"}, {"name": "long"}, MATCHED], seeds=(1,)),
                             log=lambda *_: None)
    assert (tmp_path / "cmp" / "matched" / "seed1" / "metrics.json").is_file()

    def diverging(cfg, resume=False):
        raise NonFiniteLossError("loss is nan at iteration 3: lower the learning rate")

    monkeypatch.setattr(compare_runner, "fit", diverging)
    more = _cc(tmp_path, [{"name": "base"}, {"name": "long", "seeds": [1, 2]}, MATCHED], seeds=(1,))
    messages = []
    result = compare_runner.train_all(more, log=messages.append)
    assert result.diverged[1] == "matched seed 1: waits for 'long', which diverged"
    assert result.results["matched"] == {} and set(result.results["long"]) == {1}
    assert any(line.startswith("[matched seed 1] its epochs wait for unfinished runs of 'long'") for line in messages)
