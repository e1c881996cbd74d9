"""One name per idea across methods: older option names still work, warn, and mean the same."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from segkd.distill import METHODS, build_method, options
from segkd.distill.options import method_values

RENAMED = [(name, old, new) for name in METHODS.names() for old, new in METHODS.get(name).renamed_options.items()]
WITH_TEMPERATURE = [name for name in METHODS.names() if "temperature" in METHODS.get(name).defaults()]


def _value(name: str, option: str) -> float:
    """A valid value other than the option's default."""
    default = METHODS.get(name).defaults()[option]
    return 0.3 if default is None else default * 0.5 + 0.1


@pytest.fixture(autouse=True)
def _renames_not_yet_shown(monkeypatch):
    """Each test sees the warnings as a fresh process does (each rename is shown once per process)."""
    monkeypatch.setattr(options, "_SHOWN", set())


def _settings(method: torch.nn.Module) -> dict:
    return {k: v for k, v in vars(method).items() if not k.startswith("_")}


def test_every_renamed_option_names_a_current_one():
    assert len(RENAMED) >= 15  # T, tau, kd_tau, alpha, beta, gamma, w_*, sup_weight
    for name, old, new in RENAMED:
        options = METHODS.get(name).defaults()
        assert new in options and old not in options, (name, old, new)


@pytest.mark.parametrize(("name", "old", "new"), RENAMED)
def test_old_name_warns_and_builds_the_same_method(name: str, old: str, new: str):
    value = _value(name, new)
    with pytest.warns(FutureWarning, match=f"^method '{name}': option '{old}' is deprecated; write '{new}'"):
        from_old = build_method({"name": name, old: value})
    from_new = build_method({"name": name, new: value})
    assert _settings(from_old) == _settings(from_new)
    assert _settings(from_new) != _settings(build_method({"name": name}))  # the value did reach the method


def test_old_and_new_name_together_are_refused():
    with pytest.raises(ValueError, match="method 'cwd': options 'tau' and 'temperature' are one option; keep"):
        build_method({"name": "cwd", "tau": 2.0, "temperature": 2.0})


def _losses(spec: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    mask = torch.randint(0, 4, (2, 8, 8))
    method = build_method(spec)
    student = {key: s for key in [*method.student_taps, "out"]}
    teacher = {key: t for key in [*method.teacher_taps, "out"]}
    method.setup({k: v.shape for k, v in student.items()}, {k: v.shape for k, v in teacher.items()})
    return method(student, teacher, {"mask": mask})


@pytest.mark.parametrize(("spec", "old", "new"), [
    ({"name": "logits_kd"}, {"T": 2.5}, {"temperature": 2.5}),
    ({"name": "cwd"}, {"tau": 2.5}, {"temperature": 2.5}),
    ({"name": "dist"}, {"tau": 2.5, "beta": 2.0, "gamma": 0.5},
     {"temperature": 2.5, "inter_weight": 2.0, "intra_weight": 0.5}),
    ({"name": "afdcd", "groups": 2, "patch": 2, "pool": 0}, {"tau": 0.5}, {"temperature": 0.5}),
    ({"name": "cirkd", "pixel_memory_size": 4, "region_memory_size": 2, "pixel_contrast_size": 8,
      "region_contrast_size": 4}, {"tau": 0.5, "kd_tau": 2.0}, {"temperature": 0.5, "kd_temperature": 2.0}),
])
def test_old_names_give_the_same_losses(spec: dict, old: dict, new: dict):
    with pytest.warns(FutureWarning):
        from_old = _losses({**spec, **old})
    from_new = _losses({**spec, **new})
    assert from_old.keys() == from_new.keys()
    for term in from_new:
        assert torch.equal(from_old[term], from_new[term]), term
    assert any(not torch.equal(from_new[term], value) for term, value in _losses(spec).items())


def test_tfkd_alpha_is_kd_share_in_the_loss():
    out, teacher_out = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    with pytest.warns(FutureWarning, match="'alpha' is deprecated; write 'kd_share'"):
        old = build_method({"name": "tfkd", "alpha": 0.5})({"out": out}, {"out": teacher_out}, {})
    new = build_method({"name": "tfkd", "kd_share": 0.5})({"out": out}, {"out": teacher_out}, {})
    assert torch.equal(old["kd"], new["kd"])


@pytest.mark.parametrize("name", WITH_TEMPERATURE)
def test_a_temperature_must_be_positive(name: str):
    assert len(WITH_TEMPERATURE) >= 10
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=f"^method '{name}': option 'temperature' must be > 0, got"):
            build_method({"name": name, "temperature": bad})


@pytest.mark.parametrize(("name", "old", "new"), RENAMED)
def test_old_name_reads_the_current_attribute(name: str, old: str, new: str):
    value = _value(name, new)
    method = build_method({"name": name, new: value})
    with pytest.warns(FutureWarning, match=f"^method '{name}': attribute '{old}' is deprecated; read '{new}'"):
        assert getattr(method, old) == value
    assert getattr(method, new) == value


def test_attributes_other_than_old_names_read_as_before():
    dks = build_method({"name": "dks"})
    assert isinstance(dks.branches, torch.nn.ModuleList)  # nn.Module's own look-up of sub-modules
    with pytest.raises(AttributeError, match="has no attribute 'tua'"):
        build_method({"name": "cwd"}).tua  # noqa: B018 - the look-up is the test


def test_a_rename_is_shown_once_however_often_the_method_is_built():
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # Python's default for FutureWarning: once per place it is raised
        build_method({"name": "cwd", "tau": 2.0})  # as the config checks build it
        build_method({"name": "cwd", "tau": 2.0})  # and training again, from another line
        build_method({"name": "cwd"}).tau  # noqa: B018 - the attribute's own message, once too
        build_method({"name": "cwd"}).tau  # noqa: B018
    assert [(w.category, str(w.message).split(";")[0]) for w in shown] == [
        (FutureWarning, "method 'cwd': option 'tau' is deprecated"),
        (FutureWarning, "method 'cwd': attribute 'tau' is deprecated")]


def test_importing_segkd_leaves_the_users_warning_filters_alone():
    script = "import segkd, segkd.distill; segkd.distill.build_method({'name': 'cwd', 'tau': 2.0})"
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", script],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "FutureWarning: method 'cwd': option 'tau' is deprecated; write 'temperature' instead" in done.stderr


@pytest.mark.parametrize("spec", [
    {"name": "cwd", "at": "logits"},
    {"name": "cwd", "mapping": "auto"},
    {"name": "cirkd", "weight": 1.0},
    {"name": "dhm", "stages": ["stage1", "stage2", "stage3", "stage4"], "branch_from": ["stage2", "stage3"]},
    {"name": "byot", "stages": ["stage1", "stage2", "stage3"]},
    {"name": "dhm", "mimic_weight": 1.0},
    {"name": "dhm", "alpha": 1.0},
    {"name": "dks", "synergy_weight": 1.0},
    {"name": "tfkd", "mode": "reg", "kd_share": 0.1, "temperature": 2.0},  # the reg form's defaults
    {"name": "feature_kd", "at": "stage3", "student_at": "stage3"},  # student_at left out is `at`
    {"name": "frskd", "at_levels": ["fused1", "fused2", "fused3", "fused4"]},  # left out: `levels`
], ids=lambda spec: "-".join(map(str, spec.values())))
def test_a_restated_default_is_no_option(spec: dict):
    assert method_values(spec) == {"name": spec["name"], **({"mode": "reg"} if "mode" in spec else {})}


@pytest.mark.parametrize(("spec", "kept"), [
    ({"name": "cwd", "at": "out"}, {"at": "out"}),
    ({"name": "cirkd", "weight": 2.0}, {"weight": 2.0}),
    ({"name": "dhm", "stages": ["stage2", "stage3", "stage4"]}, {"stages": ["stage2", "stage3", "stage4"]}),
    ({"name": "dks", "synergy_weight": 0.5}, {"synergy_weight": 0.5}),
    ({"name": "dhm", "alpha": 0.5}, {"mimic_weight": 0.5}),
    ({"name": "tfkd", "mode": "reg", "temperature": 6.0}, {"mode": "reg", "temperature": 6.0}),  # self's
    # given, `at` refuses a model without a logits feature point; left out, the method falls back to out
    ({"name": "logits_kd", "at": "logits"}, {"at": "logits"}),
])
def test_a_value_other_than_the_default_is_kept(spec: dict, kept: dict):
    assert method_values(spec) == {"name": spec["name"], **kept}


def test_method_values_refuses_what_build_method_refuses():
    with pytest.raises(ValueError, match="method 'cwd' has no option"):
        method_values({"name": "cwd", "tua": 4.0})
    with pytest.raises(ValueError, match="option 'temperature' must be > 0"):
        method_values({"name": "tfkd", "temperature": 0.0})
