"""data.holdout for binary sets: a part of the training list, chosen by name, held out and never trained on."""
from __future__ import annotations

import pytest

from segkd.config import ConfigError, load_config
from segkd.data import DataError, build_dataset
from segkd.data.build import is_held_out, list_samples
from segkd.data.config import DataConfig
from segkd.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def binary_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("binary")
    make_synthetic(root, "binary", num_train=40, num_val=4, image_size=32, seed=0)
    return root


def _cfg(root, **extra):
    return DataConfig(layout="binary", root=root, train_size=32, test_size=32, multiscale_sizes=[], **extra)


def _names(dataset):
    return [sample.name for sample in dataset.samples]


def test_holdout_is_disjoint_from_training_and_covers_the_list(binary_root):
    everything = set(_names(build_dataset(_cfg(binary_root), "binary", "train")))
    cfg = _cfg(binary_root, holdout=0.25, val_split="holdout")
    train = set(_names(build_dataset(cfg, "binary", "train")))
    held_out = set(_names(build_dataset(cfg, "binary", "val")))
    assert not train & held_out and train | held_out == everything
    assert held_out == {name for name in everything if is_held_out(name, 0.25)}
    assert 0 < len(held_out) < len(everything) / 2
    # check-data lists the same two parts as the data sets read
    assert {s.name for s in list_samples(cfg, "binary", "train").samples} == train
    assert {s.name for s in list_samples(cfg, "binary", "val").samples} == held_out


def test_holdout_is_deterministic_and_independent_of_the_list_order(binary_root, tmp_path):
    cfg = _cfg(binary_root, holdout=0.25, val_split="holdout")
    first = _names(build_dataset(cfg, "binary", "val"))
    assert _names(build_dataset(cfg, "binary", "val")) == first
    # the same images listed backwards: the same names held out
    reversed_list = tmp_path / "reversed"
    reversed_list.mkdir()
    for folder in ("Image", "Mask"):
        (reversed_list / folder).symlink_to(binary_root / folder)
    lines = (binary_root / "train.txt").read_text().split()
    (reversed_list / "train.txt").write_text("\n".join(reversed(lines)) + "\n")
    (reversed_list / "test.txt").write_text((binary_root / "test.txt").read_text())
    again = _names(build_dataset(_cfg(reversed_list, holdout=0.25, val_split="holdout"), "binary", "val"))
    assert sorted(again) == sorted(first)


def test_holdout_fraction_matches_the_fraction_asked(binary_root):
    # the side of a name is a hash of the name: about the fraction asked on a long list
    assert sum(is_held_out(f"horse{i:03d}", 0.2) for i in range(2000)) == pytest.approx(400, abs=60)
    # a larger fraction holds out a superset: a sample held out at 0.1 stays held out at 0.3
    small = set(_names(build_dataset(_cfg(binary_root, holdout=0.1, val_split="holdout"), "binary", "val")))
    large = set(_names(build_dataset(_cfg(binary_root, holdout=0.3, val_split="holdout"), "binary", "val")))
    assert small < large


def test_test_split_stays_the_test_list_with_a_holdout(binary_root):
    cfg = _cfg(binary_root, holdout=0.25)  # val_split unset: binary tasks score on test
    assert _names(build_dataset(cfg, "binary", "val")) == (binary_root / "test.txt").read_text().split()


def test_bad_holdout_values_are_refused_in_one_line(binary_root):
    with pytest.raises(DataError, match="data.holdout") as err:
        build_dataset(_cfg(binary_root, val_split="holdout"), "binary", "val")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="held-out part empty") as err:
        build_dataset(_cfg(binary_root, holdout=1e-9, val_split="holdout"), "binary", "train")
    assert "\n" not in str(err.value) and "'train'" in str(err.value)
    for value in ("1.0", "-0.1", "1.5"):
        with pytest.raises(ConfigError, match=rf"data\.holdout={value}") as err:
            load_config("tiny_binary", [f"data.holdout={value}"])
        assert "\n" not in str(err.value)
