"""Config loading: validation errors name the key, overrides, base links, resolved dump."""
from __future__ import annotations

import pytest
import yaml

from segkd.config import CONFIG_DIR, ConfigError, load_config, read_config, save_config, shipped_names
from segkd.engine.checks import load_run_config


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"task": "binary", "model": {"name": "fusion", "backbone": "resnet18"}}


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path / "c.yaml", {**BASE, "train": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"train\.epochz: unknown key"):
        load_config(path)


def test_wrong_type_is_named(tmp_path):
    path = _write(tmp_path / "c.yaml", {**BASE, "train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(path)


def test_unknown_model_option_and_method_option_are_named(tmp_path):
    path = _write(tmp_path / "c.yaml", {"task": "binary", "model": {"name": "fusion", "widht": 8}})
    with pytest.raises(ConfigError, match="widht"):
        load_run_config(path)
    path = _write(tmp_path / "d.yaml", {**BASE, "distill": {"methods": [{"name": "sad", "wieght": 1}]}})
    with pytest.raises(ConfigError, match="wieght"):
        load_run_config(path)
    load_config(path)  # the schema alone does not know the registries: the layers above check names


def test_method_needing_a_teacher_without_one(tmp_path):
    path = _write(tmp_path / "c.yaml", {**BASE, "distill": {"methods": [{"name": "logits_kd"}]}})
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_run_config(path)


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_base_links_merge(tmp_path):
    _write(tmp_path / "parent.yaml", {**BASE, "train": {"epochs": 7, "seed": 5}})
    child = _write(tmp_path / "child.yaml", {"base": "parent.yaml", "train": {"epochs": 2}})
    cfg = load_config(child, ["train.amp=bf16", "data.multiscale_sizes=[32,48]", "optim.lr=0.5"])
    assert cfg.train.epochs == 2 and cfg.train.seed == 5  # dicts merge key by key
    assert cfg.train.amp == "bf16" and cfg.data.multiscale_sizes == [32, 48] and cfg.optim.lr == 0.5
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(child, ["train.epochs"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(CONFIG_DIR / "tiny_semantic_kd.yaml")
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_every_shipped_config_is_valid():
    from segkd.commands.compare import load_compare_config

    names = shipped_names()  # the files and the aliases composing fragments (byot_camo)
    assert len(names) >= 79 and {"byot_camo", "fusion_sod", "horses_lite0_holdout", "compare_sbg"} <= set(names)
    for name in names:
        (load_compare_config if read_config(name)[0] == "compare" else load_run_config)(name)


@pytest.mark.parametrize("data_set", ["sod300", "horses"])
def test_self_distillation_study_configs_resolve_every_run(data_set):
    import torch

    from segkd.commands.compare import load_compare_config, run_configs
    from segkd.models import build_model

    search = load_compare_config(f"search_sd_{data_set}")
    for cfg in run_configs(search).values():  # the schedule is chosen on the held-out part, never on test
        assert cfg.task == "binary" and cfg.data.holdout > 0 and cfg.data.val_split == "holdout"
    compare = load_compare_config(f"compare_sd_{data_set}")
    configs = run_configs(compare)
    runs = {e.name: [configs[(e.name, seed)] for seed in compare.seeds_of(e)] for e in compare.entries}
    assert len(runs["baseline"]) == 5 and all(len(cfgs) >= 3 for cfgs in runs.values())
    methods = {m["name"] for cfgs in runs.values() for m in cfgs[0].distill.methods}
    assert methods == {"pspsd", "tfkd", "frskd", "byot", "dhm", "sad", "dks"}
    base = runs["baseline"][0]
    assert base.model.name == "fusion" and str(base.model.kwargs["pretrained"]).startswith("package:")
    # a row at a method's own learning rate takes one its search tried on the held-out part
    own_lr = {e.name for e in compare.entries if any(item.startswith("optim.lr=") for item in e.set)}
    searched = {(m["name"], cfg.optim.lr) for cfg in run_configs(search).values() for m in cfg.distill.methods}
    for name in own_lr:
        cfg = runs[name][0]
        assert cfg.optim.lr != base.optim.lr and (cfg.distill.methods[0]["name"], cfg.optim.lr) in searched
    # a row at a longer schedule (a method at the matched row's epochs) trains longer, nothing else
    longer = {e.name for e in compare.entries if any(item.startswith("train.epochs=") for item in e.set)}
    assert all(runs[name][0].train.epochs > base.train.epochs for name in longer)
    for name, cfgs in runs.items():  # the same data, schedule and optimiser for every row, scored on test
        for cfg in cfgs:
            assert cfg.data.holdout == 0 and cfg.data.split_name("binary", "val") == "test"
            optim = cfg.optim.model_copy(update={"lr": base.optim.lr}) if name in own_lr else cfg.optim
            epochs = base.train.epochs if name in longer else cfg.train.epochs
            assert (cfg.data, epochs, optim, cfg.schedule) == (base.data, base.train.epochs,
                                                                base.optim, base.schedule)
    typical = runs["deeplabv3plus"][0].model.kwargs
    assert all(typical[key] == base.model.kwargs[key] for key in ("backbone", "pretrained"))
    network = build_model("deeplabv3plus", **{**typical, "pretrained": None}).eval()
    assert network(torch.zeros(1, 3, 64, 64))["out"].shape == (1, 1, 64, 64)  # one foreground channel
