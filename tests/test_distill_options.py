"""One name per idea across methods: older option names still work, warn, and mean the same."""
from __future__ import annotations

import pytest
import torch

from segkd.distill import METHODS, build_method

RENAMED = [(name, old, new) for name in METHODS.names() for old, new in METHODS.get(name).renamed_options.items()]
WITH_TEMPERATURE = [name for name in METHODS.names() if "temperature" in METHODS.get(name).defaults()]


def _value(name: str, option: str) -> float:
    """A valid value other than the option's default."""
    default = METHODS.get(name).defaults()[option]
    return 0.3 if default is None else default * 0.5 + 0.1


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
    with pytest.warns(DeprecationWarning, match=f"^method '{name}': option '{old}' is deprecated; write '{new}'"):
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
    with pytest.warns(DeprecationWarning):
        from_old = _losses({**spec, **old})
    from_new = _losses({**spec, **new})
    assert from_old.keys() == from_new.keys()
    for term in from_new:
        assert torch.equal(from_old[term], from_new[term]), term
    assert any(not torch.equal(from_new[term], value) for term, value in _losses(spec).items())


def test_tfkd_alpha_is_kd_share_in_the_loss():
    out, teacher_out = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    with pytest.warns(DeprecationWarning, match="'alpha' is deprecated; write 'kd_share'"):
        old = build_method({"name": "tfkd", "alpha": 0.5})({"out": out}, {"out": teacher_out}, {})
    new = build_method({"name": "tfkd", "kd_share": 0.5})({"out": out}, {"out": teacher_out}, {})
    assert torch.equal(old["kd"], new["kd"])


@pytest.mark.parametrize("name", WITH_TEMPERATURE)
def test_a_temperature_must_be_positive(name: str):
    assert len(WITH_TEMPERATURE) >= 10
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=f"^method '{name}': option 'temperature' must be > 0, got"):
            build_method({"name": name, "temperature": bad})
