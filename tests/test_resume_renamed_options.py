"""A run stored with a method option's older name (before the rename) is the same run under its current
name: ``--resume`` continues it and ``segkd compare`` reuses it; a changed value is still a change."""
from __future__ import annotations

import warnings

import pytest
import torch
import yaml

from segkd.commands.compare_config import CompareConfig
from segkd.commands.compare_runner import train_all
from segkd.config import ConfigError, save_config
from segkd.engine.checkpoint import atomic_save, read_checkpoint
from segkd.engine.resume import ResumeError, check_resume, methods_as_built, run_changes
from segkd.engine.trainer import fit

from engine_helpers import fusion_net, tiny_binary_config

OLD_SPELLING = [{"name": "logits_kd", "T": 1.0}]  # as runs trained before the rename stored it


def _kd_config(tmp_path, temperature: float):
    teacher = tmp_path / "teacher.pt"
    if not teacher.exists():  # an untrained teacher: what it teaches does not matter here
        torch.save(fusion_net().state_dict(), teacher)
    return tiny_binary_config(tmp_path, train={"epochs": 1}, distill={
        "teacher": {"model": {"name": "fusion", "backbone": "resnet18", "width": 8}, "checkpoint": str(teacher)},
        "methods": [{"name": "logits_kd", "temperature": temperature}]})


def _store_old_spelling(run_dir) -> None:
    """Rewrite what a run folder stores (config.yaml, last.pt) as a run from before the rename did."""
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    stored["distill"]["methods"] = OLD_SPELLING
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    ckpt = read_checkpoint(run_dir / "last.pt")
    ckpt["config"]["distill"]["methods"] = OLD_SPELLING
    atomic_save(ckpt, run_dir / "last.pt")


def test_old_names_and_restated_defaults_are_no_change_but_values_are():
    old = {"distill": {"methods": [{"name": "logits_kd", "T": 1.0}, {"name": "byot", "alpha": 0.2}]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a stored config's old names are not the user's to fix
        same = {"distill": {"methods": [{"name": "logits_kd"}, {"name": "byot", "kd_share": 0.2}]}}
        assert run_changes(old, same) == []
        changed = run_changes(old, {"distill": {"methods": [{"name": "logits_kd", "temperature": 2.0},
                                                             {"name": "byot", "kd_share": 0.2}]}})
    assert len(changed) == 1 and changed[0].startswith("distill.methods: ") and '"temperature": 2.0' in changed[0]
    # a method this version lacks (or an option it refuses) is compared as written, not an error
    unknown = {"distill": {"methods": [{"name": "gone", "x": 1}]}}
    assert methods_as_built(unknown) == unknown and run_changes(unknown, unknown) == []


def test_options_restating_defaults_under_other_names_or_as_lists_are_no_change():
    stored = {"distill": {"methods": [
        {"name": "cwd", "at": "logits", "mapping": "auto"}, {"name": "cirkd", "weight": 1.0},
        {"name": "dhm", "stages": ["stage1", "stage2", "stage3", "stage4"], "alpha": 1.0},
        {"name": "byot", "stages": ["stage1", "stage2", "stage3"]}, {"name": "dks", "synergy_weight": 1.0}]}}
    written_now = {"distill": {"methods": [{"name": name} for name in ("cwd", "cirkd", "dhm", "byot", "dks")]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert run_changes(stored, written_now) == []
        changed = [*written_now["distill"]["methods"][:4], {"name": "dks", "synergy_weight": 2.0}]
        assert len(run_changes(stored, {"distill": {"methods": changed}})) == 1


def test_a_run_stored_with_an_older_option_name_resumes(tmp_path):
    cfg = _kd_config(tmp_path, temperature=1.0)
    first = fit(cfg)
    _store_old_spelling(cfg.run_dir)
    again = fit(cfg, resume=True)  # was: ResumeError "distill.methods: [... "T": 1.0 ...] → [...]"
    assert again["iterations"] == first["iterations"] == 2
    with pytest.raises(ResumeError, match=r"distill\.methods: .*\"temperature\": 2\.0"):
        check_resume(_kd_config(tmp_path, temperature=2.0), cfg.run_dir / "last.pt")


def test_compare_reuses_a_run_stored_with_an_older_option_name(tmp_path):
    save_config(_kd_config(tmp_path, temperature=1.0), tmp_path / "run.yaml")

    def comparison(temperature):
        return CompareConfig.model_validate({
            "name": "t", "run_config": str(tmp_path / "run.yaml"), "output_dir": str(tmp_path / "cmp"),
            "seeds": [1], "baseline": "kd", "entries": [
                {"name": "kd", "set": [f"distill.methods=[{{name: logits_kd, temperature: {temperature}}}]"]}]})

    messages: list[str] = []
    train_all(comparison(1.0), log=messages.append)
    _store_old_spelling(tmp_path / "cmp" / "kd" / "seed1")
    assert train_all(comparison(1.0), log=messages.append).results["kd"][1]["iterations"] == 2
    assert "finished earlier with the same config, reused" in messages[-1]
    with pytest.raises(ConfigError, match=r"kd seed 1: distill\.methods: .*\"temperature\": 2\.0"):
        train_all(comparison(2.0), log=messages.append)
