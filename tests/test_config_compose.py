"""Configs that compose: lists of bases, fragments and their compositions, vars, the kind key,
``segkd config show``, and the config layer importing nothing above it."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import yaml

from segkd.cli import main
from segkd.config import ALIASES, CONFIG_DIR, FRAGMENT_FOLDERS, ConfigError, load_config, read_config
from segkd.engine.checks import load_run_config

RUN = {"task": "binary", "model": {"name": "fusion", "backbone": "resnet18"}}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_list_of_bases_merges_left_to_right_then_the_file(tmp_path):
    _write(tmp_path / "a.yaml", {**RUN, "train": {"epochs": 3, "seed": 5}, "optim": {"lr": 0.5}})
    _write(tmp_path / "b.yaml", {"train": {"epochs": 4}, "optim": {"momentum": 0.5}})
    child = _write(tmp_path / "child.yaml", {"base": ["a.yaml", "b.yaml"], "optim": {"lr": 0.1}})
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.seed) == (4, 5)  # b over a, dicts merged key by key
    assert (cfg.optim.lr, cfg.optim.momentum) == (0.1, 0.5)  # the file over its bases


def test_a_cycle_and_a_missing_base_are_one_line_naming_the_file(tmp_path):
    _write(tmp_path / "a.yaml", {**RUN, "base": ["b.yaml"]})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match=r"b\.yaml: base links form a cycle: a\.yaml -> b\.yaml -> a\.yaml") as err:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(err.value)
    _write(tmp_path / "c.yaml", {**RUN, "base": ["tiny_binary", "gone.yaml"]})
    with pytest.raises(ConfigError, match=r"c\.yaml: base 'gone\.yaml' not found") as err:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(err.value)
    _write(tmp_path / "d.yaml", {**RUN, "base": {"file": "a.yaml"}})
    with pytest.raises(ConfigError, match=r"d\.yaml: base: give a config file or a list of them"):
        load_config(tmp_path / "d.yaml")


def test_the_same_base_twice_is_no_cycle(tmp_path):
    _write(tmp_path / "common.yaml", RUN)
    _write(tmp_path / "x.yaml", {"base": "common.yaml", "train": {"epochs": 2}})
    child = _write(tmp_path / "child.yaml", {"base": ["common.yaml", "x.yaml"]})
    assert load_config(child).train.epochs == 2


def test_the_kind_key_tells_the_schemas_apart_not_the_name(tmp_path):
    from segkd.commands.compare import load_compare_config

    run = _write(tmp_path / "compare_as_a_run.yaml", {"kind": "run", **RUN})
    assert read_config(run)[0] == "run" and load_config(run).task == "binary"
    comparison = _write(tmp_path / "my_study.yaml", {"kind": "compare", "run_config": "tiny_binary",
                                                     "output_dir": str(tmp_path), "baseline": "a",
                                                     "entries": [{"name": "a"}]})
    assert read_config(comparison)[0] == "compare"
    assert load_compare_config(comparison).run_config == "tiny_binary"  # the key is not the schema's
    with pytest.raises(ConfigError, match="a comparison config .* run it with segkd compare"):
        load_config(comparison)
    _write(tmp_path / "odd.yaml", {"kind": "sweep", **RUN})
    with pytest.raises(ConfigError, match="kind: 'sweep' is neither run nor compare"):
        load_config(tmp_path / "odd.yaml")
    # without the key, the content: a comparison's own keys, whatever the file's name
    assert read_config(_write(tmp_path / "cmp.yaml", {"run_config": "tiny_binary", "entries": []}))[0] == "compare"
    assert read_config(_write(tmp_path / "compare_x.yaml", RUN))[0] == "run"
    assert all(read_config(p)[0] == "compare" for p in CONFIG_DIR.glob("*.yaml") if "kind: compare" in p.read_text())


def test_an_alias_and_a_composition_resolve_to_the_same_fragments():
    alias = load_run_config("byot_camo").to_dict()
    composed = load_run_config("fusion+camo+byot").to_dict()
    assert composed.pop("name") == "fusion_camo_byot" and alias.pop("name") == "byot_camo"
    assert composed == alias
    spelled = load_run_config("models/fusion+datasets/camo+methods/byot").to_dict()
    assert spelled.pop("name") == "fusion_camo_byot" and spelled == alias
    assert load_run_config("tfkd_soc").distill.teacher.checkpoint.as_posix() == "runs/fusion_soc/last.pt"
    with pytest.raises(ConfigError, match="config 'byot_nowhere' not found"):
        load_config("byot_nowhere")


def test_a_var_no_fragment_sets_is_named(tmp_path):
    plain = {k: v for k, v in yaml.safe_load((CONFIG_DIR / "tiny_binary.yaml").read_text()).items() if k != "vars"}
    _write(tmp_path / "plain.yaml", plain)
    _write(tmp_path / "t.yaml", {"base": ["plain.yaml", "methods/tfkd.yaml"]})
    with pytest.raises(ConfigError, match=r"distill\.teacher\.checkpoint: '\$\{dataset\}' is not in vars"):
        load_config(tmp_path / "t.yaml")
    _write(tmp_path / "v.yaml", {"base": "t.yaml", "vars": {"dataset": "mine"}})
    cfg = load_run_config(tmp_path / "v.yaml")
    assert cfg.distill.teacher.checkpoint.as_posix() == "runs/fusion_mine/last.pt" and cfg.name == "tiny_binary"


def test_set_name_and_set_vars_are_filled_in_like_the_file(tmp_path):
    """``--set`` comes before ``${...}`` is filled: a new name moves ``runs/${name}``, a var given on the
    command line reaches the strings that use it."""
    _write(tmp_path / "r.yaml", {**RUN, "name": "mine", "output_dir": "runs/${name}"})
    assert load_config(tmp_path / "r.yaml").output_dir.as_posix() == "runs/mine"
    assert load_config(tmp_path / "r.yaml", ["name=other"]).output_dir.as_posix() == "runs/other"
    cfg = load_run_config("tiny_binary+methods/tfkd", ["vars.dataset=horses"])
    assert cfg.distill.teacher.checkpoint.as_posix() == "runs/fusion_horses/last.pt"
    assert main(["config", "show", "tiny_binary+methods/tfkd", "--set", "vars.dataset=camo"]) == 0
    # a comparison entry's `set` too
    from segkd.commands.compare import load_compare_config
    from segkd.commands.compare_config import run_configs

    entries = [{"name": "a"}, {"name": "t", "base": ["methods/tfkd"], "set": ["vars.dataset=camo"]}]
    study = _write(tmp_path / "study.yaml", {"kind": "compare", "run_config": "tiny_binary", "baseline": "a",
                                             "output_dir": str(tmp_path), "seeds": [1], "entries": entries})
    runs = run_configs(load_compare_config(study))
    assert runs[("t", 1)].distill.teacher.checkpoint.as_posix() == "runs/fusion_camo/last.pt"


def test_fragment_names_are_unique_across_their_folders():
    stems = [p.stem for folder in FRAGMENT_FOLDERS for p in (CONFIG_DIR / folder).glob("*.yaml")]
    assert len(stems) == len(set(stems)) and len(stems) >= 13
    assert not {p.stem for p in CONFIG_DIR.glob("*.yaml")} & set(stems)  # a part names one file
    for fragments in ALIASES.values():  # every fixed part of an alias is a fragment that exists
        assert all((CONFIG_DIR / f"{f}.yaml").is_file() for f in fragments if "{" not in f)


def _without_names(raw):
    """A resolved config without what may differ between copies: names, output folders, data paths."""
    raw = {k: v for k, v in raw.items() if k not in ("name", "output_dir")}
    if isinstance(raw.get("data"), dict):
        raw["data"] = {k: v for k, v in raw["data"].items() if k != "root"}
    return raw


def test_no_two_shipped_configs_differ_only_in_a_data_path_or_a_name():
    resolved = {p.name: _without_names(read_config(p)[1]) for p in sorted(CONFIG_DIR.glob("*.yaml"))}
    copies = [(a, b) for a, b in itertools.combinations(resolved, 2) if resolved[a] == resolved[b]]
    assert not copies
    # and fragments say something of their own, beyond a data set's path
    own = {p: yaml.safe_load(p.read_text()) for p in CONFIG_DIR.rglob("*.yaml") if p.parent.name != "datasets"}
    assert all(_without_names(raw) for raw in own.values())


def test_each_method_recipe_is_written_once():
    written = {}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        for spec in ((yaml.safe_load(path.read_text()) or {}).get("distill") or {}).get("methods") or []:
            written.setdefault(spec["name"], []).append(path.relative_to(CONFIG_DIR).as_posix())
    for method in ("byot", "dhm", "dks", "frskd", "pspsd", "sad", "tfkd"):
        assert written[method] == [f"methods/{method}.yaml"]
    assert written["cirkd"] == ["recipes/cirkd.yaml"] and written["afdcd"] == ["recipes/afdcd.yaml"]
    assert written["cwd"] == ["recipes/kd_cwd.yaml"]  # the recommended recipe, in its runs by base


def test_config_show_prints_the_resolved_yaml(tmp_path, capsys):
    assert main(["config", "show", "byot_camo", "--set", "train.epochs=3"]) == 0
    shown = capsys.readouterr().out
    stored = _write(tmp_path / "shown.yaml", yaml.safe_load(shown))
    assert yaml.safe_load(shown)["kind"] == "run"
    assert load_run_config(stored).to_dict() == load_run_config("byot_camo", ["train.epochs=3"]).to_dict()
    assert main(["config", "show", "compare_sod300"]) == 0
    comparison = yaml.safe_load(capsys.readouterr().out)
    assert comparison["kind"] == "compare" and comparison["run_config"] == "sod300_fusion"


def test_the_config_layer_imports_nothing_above_it():
    code = ("import sys, segkd.config as c; c.load_config('byot_camo'); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['segkd', 'models'], ['segkd', 'distill'], ['segkd', 'engine'], ['segkd', 'commands'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_comparison_entry_takes_a_recipe_from_its_fragments(tmp_path):
    from segkd.commands.compare import load_compare_config, run_configs

    study = _write(tmp_path / "study.yaml", {
        "kind": "compare", "run_config": "tiny_binary", "output_dir": str(tmp_path), "baseline": "alone",
        "entries": [{"name": "alone"}, {"name": "byot", "base": ["methods/byot"]},
                    {"name": "byot_half", "base": ["methods/byot"], "set": ["loss.main_weight=0.5"]}]})
    cc = load_compare_config(study)
    alone, byot, byot_half = (run_configs(cc)[(entry.name, 1)] for entry in cc.entries)
    assert alone.distill.methods == [] and alone.loss.main_weight == 1.0
    assert byot.distill.methods == [{"name": "byot"}] and byot.loss.main_weight == 0.9  # methods/byot.yaml
    assert byot_half.loss.main_weight == 0.5  # the entry's overrides come after its fragments
    assert (byot.name, byot.train.epochs) == ("byot", alone.train.epochs)  # the rest is the run config's
    gone = _write(tmp_path / "gone.yaml", {**yaml.safe_load(study.read_text()),
                                           "entries": [{"name": "alone", "base": ["methods/byto"]}]})
    with pytest.raises(ConfigError, match=r"entry 'alone': base \['methods/byto'\]: config 'methods/byto' not found"):
        run_configs(load_compare_config(gone))


def _flat_keys(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_comparisons_take_recipes_from_their_fragments_not_copies():
    recipes = {p.relative_to(CONFIG_DIR).with_suffix("").as_posix(): yaml.safe_load(p.read_text())
               for folder in ("methods", "recipes") for p in (CONFIG_DIR / folder).glob("*.yaml")}
    spelled = {name: r["distill"]["methods"] for name, r in recipes.items()}
    comparisons = [p for p in CONFIG_DIR.glob("*.yaml") if read_config(p)[0] == "compare"]
    used = set()
    for path in comparisons:
        for entry in read_config(path)[1]["entries"]:
            used.update(entry.get("base", []))
            overrides = dict(item.split("=", 1) for item in entry.get("set", []))
            methods = yaml.safe_load(overrides.get("distill.methods", "[]"))
            copied = [name for name, spec in spelled.items() if methods == spec]
            assert not copied, f"{path.name}: entry '{entry['name']}' copies {copied}: write base: {copied}"
            for base in entry.get("base", []):  # nor sets again what its fragment holds
                again = set(overrides) & set(_flat_keys(recipes[base]))
                assert not again, f"{path.name}: entry '{entry['name']}' sets {again} of {base} again"
    assert {f"methods/{m}" for m in ("byot", "dhm", "dks", "frskd", "pspsd", "sad", "tfkd")} | {
        "recipes/kd_cwd"} <= used
