"""Every config name shipped before configs composed still resolves to the same values
(tests/data/resolved_configs.json, written by tests/data/resolve_shipped_configs.py before the change),
and no shipped config spells a method option under an older name."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from segkd.config import Config, read_config, shipped_names
from segkd.distill import build_method
from segkd.distill.options import method_values

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())


def _run_values(run: dict[str, Any]) -> dict[str, Any]:
    run = Config.model_validate(run).to_dict()  # keys added since the snapshot: their defaults, no change
    distill = run.get("distill") or {}
    return {**run, "distill": {**distill, "methods": [method_values(m) for m in distill.get("methods") or []]}}


def _comparison_values(dump: dict[str, Any]) -> dict[str, Any]:
    """A comparison without how its entries are written (fragments, overrides): their runs are compared."""
    entries = [{k: v for k, v in e.items() if k not in ("base", "set")} for e in dump["entries"]]
    return {**dump, "entries": entries}


def test_method_values_drop_restated_defaults_only():
    assert method_values({"name": "byot", "alpha": 0.1}) == {"name": "byot"}
    assert method_values({"name": "byot", "alpha": 0.2}) == {"name": "byot", "kd_share": 0.2}
    # the self form and its defaults (kd_share 0.95, temperature 6), which depend on the form
    assert method_values({"name": "tfkd", "mode": "self", "alpha": 0.95, "temperature": 6.0}) == {"name": "tfkd"}
    assert method_values({"name": "tfkd", "mode": "reg", "temperature": 6.0}) == {
        "name": "tfkd", "mode": "reg", "temperature": 6.0}  # the reg form's is 2
    assert method_values({"name": "logits_kd", "T": 1.9, "at": "out"}) == {
        "name": "logits_kd", "temperature": 1.9, "at": "out"}


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_an_old_name_resolves_to_the_same_values(name):
    from segkd.commands.compare import load_compare_config, run_configs
    from segkd.engine.checks import load_run_config

    stored = SNAPSHOT[name]
    assert read_config(name)[0] == stored["kind"]  # told apart by `kind:` now, by the name before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # valid configs that would train to little are the user's choice
        if stored["kind"] == "run":
            assert _run_values(load_run_config(name).to_dict()) == _run_values(stored["config"])
            return
        cc = load_compare_config(name)
        assert _comparison_values(cc.model_dump(mode="json")) == _comparison_values(stored["config"])
        configs = run_configs(cc)
        for entry in cc.entries:
            resolved = configs[(entry.name, cc.seeds_of(entry)[0])].to_dict()
            resolved["train"].pop("progress")  # on in a terminal only: not part of the stored values
            assert _run_values(resolved) == _run_values(stored["runs"][entry.name]), entry.name


def test_the_snapshot_covers_the_method_and_data_set_pairs():
    methods = ("byot", "dhm", "dks", "frskd", "pspsd", "sad", "tfkd")
    data_sets = ("camo", "cod10k", "dutomron", "soc", "thur15k")
    assert {f"{m}_{d}" for m in methods for d in data_sets} | {f"fusion_{d}" for d in data_sets} <= set(SNAPSHOT)
    assert len(SNAPSHOT) == 79


@pytest.mark.parametrize("name", shipped_names())
def test_no_shipped_config_spells_an_older_option_name(name):
    from segkd.commands.compare import load_compare_config, run_configs
    from segkd.engine.checks import load_run_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a short schedule's warning: not what this test is about
        warnings.simplefilter("error", FutureWarning)
        if read_config(name)[0] == "run":
            runs = [load_run_config(name)]
        else:
            cc = load_compare_config(name)
            runs = list(run_configs(cc).values())
        for run in runs:  # built here too, so the test does not rely on how far loading checks methods
            for spec in run.distill.methods:
                build_method(spec)
