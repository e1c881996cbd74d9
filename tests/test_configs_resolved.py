"""Every config name shipped before configs composed still resolves to the same values
(tests/data/resolved_configs.json, written by tests/data/resolve_shipped_configs.py before the change)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from segkd.config import read_config

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_an_old_name_resolves_to_the_same_values(name):
    from segkd.commands.compare import load_compare_config, run_config
    from segkd.engine.checks import load_run_config

    stored = SNAPSHOT[name]
    assert read_config(name)[0] == stored["kind"]  # told apart by `kind:` now, by the name before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # valid configs that would train to little are the user's choice
        if stored["kind"] == "run":
            assert load_run_config(name).to_dict() == stored["config"]
            return
        cc = load_compare_config(name)
        assert cc.model_dump(mode="json") == stored["config"]
        for entry in cc.entries:
            resolved = run_config(cc, entry, (entry.seeds or cc.seeds)[0]).to_dict()
            resolved["train"].pop("progress")  # on in a terminal only: not part of the stored values
            assert resolved == stored["runs"][entry.name], entry.name


def test_the_snapshot_covers_the_method_and_data_set_pairs():
    methods = ("byot", "dhm", "dks", "frskd", "pspsd", "sad", "tfkd")
    data_sets = ("camo", "cod10k", "dutomron", "soc", "thur15k")
    assert {f"{m}_{d}" for m in methods for d in data_sets} | {f"fusion_{d}" for d in data_sets} <= set(SNAPSHOT)
    assert len(SNAPSHOT) == 79
