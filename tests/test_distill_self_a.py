"""PSPSD, FRSKD and Tf-KD: hand-computed terms, shapes, gradients, ramp-up, options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_math import np_kl_binary
from torch import nn

from segkd.distill.base import build_method
from segkd.distill.frskd import FRSKD, attention_transfer, ramp_factor
from segkd.distill.hooks import FeatureTaps
from segkd.distill.pspsd import PSPSD
from segkd.distill.tfkd import TfKD, virtual_teacher_logits
from segkd.models.losses import structure_loss

import engine_helpers

SIZE = 32  # input H = W; stages at strides 4, 8, 16, 32
CHANNEL_SETS = [(8, 12, 16, 20), (6, 10, 14, 18)]


def np_attention(student: torch.Tensor, target: torch.Tensor) -> float:
    """AT of one level: L2-normalised mean_c(f²) maps per sample, mean squared difference."""
    def attention(f: torch.Tensor) -> np.ndarray:
        a = (f.detach().double().numpy() ** 2).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return float(((attention(student) - attention(target)) ** 2).mean())


def make_student(
    channels: tuple[int, ...] = CHANNEL_SETS[0], width: int = 8, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Stand-in captured tensors of the fusion network: stage/fused taps and ``out``."""
    g = torch.Generator().manual_seed(seed)
    taps = {}
    for level, c in enumerate(channels, start=1):
        side = SIZE >> (level + 1)
        taps[f"stage{level}"] = torch.randn(2, c, side, side, generator=g)
        taps[f"fused{level}"] = torch.randn(2, width, side, side, generator=g)
    taps["out"] = 2 * torch.randn(2, 1, SIZE, SIZE, generator=g)
    return {k: v.requires_grad_() for k, v in taps.items()}


def make_mask(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 1, SIZE, SIZE, generator=g) > 0.5).float()


def set_up(spec: dict, student: dict[str, torch.Tensor]):
    method = build_method(spec)
    method.setup({k: v.shape for k, v in student.items()}, None)
    return method


def stages(student: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [student[f"stage{i}"] for i in range(1, 5)]


# ---------------------------------------------------------------- PSPSD
def test_pspsd_terms_match_hand_computed() -> None:
    student, mask = make_student(), make_mask()
    spec = {"name": "pspsd", "width": 8, "temperature": 2.0, "aux_sup_weight": 0.5,
            "top_down_weight": 2.0, "consistency_weight": 3.0, "feature_weight": 0.25}
    method = set_up(spec, student)
    losses = method(student, None, {"mask": mask})
    assert set(losses) == {"aux_sup", "top_down", "feature", "consistency"}
    fused, logits = method.branches(stages(student), torch.Size((SIZE, SIZE)))  # BN: batch stats
    out = student["out"]
    chain = [*zip(logits[:3], logits[1:], strict=True), (out, logits[0])]
    top_down = np.mean([np_kl_binary(s, t, 2.0) for s, t in chain])
    preds = [*logits, out]
    pairs = [(a, b) for i, a in enumerate(preds) for b in preds[i + 1:]]
    assert len(pairs) == 10
    consistency = np.mean(
        [(np_kl_binary(a, b, 2.0) + np_kl_binary(b, a, 2.0)) / 2 for a, b in pairs]
    )
    feature = np.mean([
        ((student[f"fused{i + 1}"].detach().numpy() - fused[i].detach().numpy()) ** 2).mean()
        for i in range(4)
    ])
    aux_sup = sum(structure_loss(z, mask).item() for z in logits)
    assert losses["top_down"].item() == pytest.approx(2.0 * top_down, rel=1e-4)
    assert losses["consistency"].item() == pytest.approx(3.0 * consistency, rel=1e-4)
    assert losses["feature"].item() == pytest.approx(0.25 * feature, rel=1e-4)
    assert losses["aux_sup"].item() == pytest.approx(0.5 * aux_sup, rel=1e-4)


@pytest.mark.parametrize("pyramid", ["ppm", "aspp"])
@pytest.mark.parametrize("channels", CHANNEL_SETS)
def test_pspsd_builds_from_shapes(pyramid: str, channels: tuple[int, ...]) -> None:
    student = make_student(channels, width=6)
    method = set_up({"name": "pspsd", "pyramid": pyramid, "width": 8}, student)
    first_convs = [next(m for m in p.modules() if isinstance(m, nn.Conv2d))
                   for p in method.branches.pyramids]
    assert [c.in_channels for c in first_convs] == list(channels)
    # fused taps are 6 wide, the pyramid 8: a 1×1 mapping per level
    assert all(isinstance(m, nn.Conv2d) and m.in_channels == 6 for m in method.transfer_maps)
    fused, logits = method.branches(stages(student), torch.Size((SIZE, SIZE)))
    assert [tuple(f.shape) for f in fused] == [(2, 8, SIZE >> k, SIZE >> k) for k in (2, 3, 4, 5)]
    assert all(tuple(z.shape) == (2, 1, SIZE, SIZE) for z in logits)
    losses = method(student, None, {"mask": make_mask()})
    assert all(torch.isfinite(v) for v in losses.values())


def test_pspsd_gradients_and_detached_targets() -> None:
    student = make_student()
    method = set_up({"name": "pspsd", "width": 8}, student)
    assert all(isinstance(m, nn.Identity) for m in method.transfer_maps)
    losses = method(student, None, {"mask": make_mask()})
    losses["top_down"].backward(retain_graph=True)
    # the deepest branch is only ever a target of the top-down chain
    assert all(p.grad is None for p in method.branches.heads[3].parameters())
    assert all(p.grad is not None for p in method.branches.heads[0].parameters())
    method.zero_grad(set_to_none=True)
    losses["feature"].backward(retain_graph=True)
    assert all(p.grad is None for p in method.branches.parameters())
    assert student["fused1"].grad is not None
    (losses["aux_sup"] + losses["consistency"]).backward()
    assert all(student[k].grad is not None for k in (*method.student_taps, "out"))


def test_pspsd_paths_and_transfer_options() -> None:
    student = make_student()
    only_consistency = set_up({"name": "pspsd", "width": 8, "paths": ["consistency"]}, student)
    assert set(only_consistency(student, None, {"mask": make_mask()})) == {"aux_sup", "consistency"}
    no_transfer = set_up({"name": "pspsd", "width": 8, "transfer": []}, student)
    assert no_transfer.student_taps == {f"stage{i}": f"stage{i}" for i in range(1, 5)}
    assert "feature" not in no_transfer(student, None, {"mask": make_mask()})


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ({"pyramid": "fpn"}, ValueError, "pyramid"),
        ({"paths": ["sideways"]}, ValueError, "paths"),
        ({"transfer": ["fused1"]}, ValueError, "transfer"),
        ({"bins": [0, 2]}, ValueError, "bins"),
        ({"temprature": 2.0}, ValueError, "temprature"),
    ],
)
def test_pspsd_option_errors(spec: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        build_method({"name": "pspsd", **spec})


def test_setup_names_missing_tap() -> None:
    student = make_student()
    del student["stage3"]
    for spec in ({"name": "pspsd"}, {"name": "frskd", **FRSKD_HYBRID}):
        with pytest.raises(KeyError, match="stage3"):
            set_up(spec, student)


# ---------------------------------------------------------------- FRSKD
# segkd's former default: backbone stages feed the self-teacher, attention transfer on the neck
FRSKD_HYBRID = {"levels": [f"stage{i}" for i in range(1, 5)], "at_levels": [f"fused{i}" for i in range(1, 5)]}

def test_attention_transfer_hand_computed() -> None:
    student = torch.tensor([[[[1.0, 0.0]]]])  # 1×1×1×2: attention [1, 0]
    target = torch.ones(1, 2, 1, 2)  # attention [1, 1] → normalised [1/√2, 1/√2]
    expected = ((1 - 1 / math.sqrt(2)) ** 2 + 0.5) / 2
    assert attention_transfer(student, target).item() == pytest.approx(expected, rel=1e-6)
    # a target at another size is resized to the student's: a constant map stays constant
    assert attention_transfer(student, torch.ones(1, 3, 4, 4)).item() == pytest.approx(expected)


def test_frskd_terms_match_hand_computed() -> None:
    torch.manual_seed(0)  # the self-teacher's initial weights: a map that is all zero has no direction to compare
    student, mask = make_student(), make_mask()
    spec = {"name": "frskd", "width": 8, "soft_weight": 2.0, "feature_weight": 50.0, "temperature": 3.0, **FRSKD_HYBRID}
    method = set_up(spec, student)
    method.set_progress(1.0)
    losses = method(student, None, {"mask": mask})
    refined, teacher = method.self_teacher(stages(student), torch.Size((SIZE, SIZE)))
    # attention transfer on the neck (fused1..4), towards the refined maps of the same level
    necks = [student[f"fused{i}"] for i in range(1, 5)]
    attention = sum(np_attention(f, r) for f, r in zip(necks, refined, strict=True))
    assert losses["feature"].item() == pytest.approx(50.0 * attention, rel=1e-4)
    soft = 2.0 * np_kl_binary(student["out"], teacher, 3.0)
    assert losses["soft"].item() == pytest.approx(soft, rel=1e-4)
    assert losses["aux_sup"].item() == pytest.approx(structure_loss(teacher, mask).item(), rel=1e-5)
    on_stages = set_up({**spec, "at_levels": None}, student)  # the classification paper's choice
    on_stages.load_state_dict(method.state_dict())
    on_stages.set_progress(1.0)
    attention = sum(np_attention(f, r) for f, r in zip(stages(student), refined, strict=True))
    assert on_stages(student, None, {"mask": mask})["feature"].item() == pytest.approx(50.0 * attention, rel=1e-4)


@pytest.mark.parametrize("channels", CHANNEL_SETS)
def test_frskd_builds_from_shapes(channels: tuple[int, ...]) -> None:
    student = make_student(channels)
    method = set_up({"name": "frskd", "width": 8, **FRSKD_HYBRID}, student)
    assert [lat[0].in_channels for lat in method.self_teacher.laterals] == list(channels)
    assert len(method.self_teacher.layers) == 2  # two stacked BiFPN layers, as the official code
    refined, teacher = method.self_teacher(stages(student), torch.Size((SIZE, SIZE)))
    assert [tuple(r.shape) for r in refined] == [(2, 8, SIZE >> k, SIZE >> k) for k in (2, 3, 4, 5)]
    assert tuple(teacher.shape) == (2, 1, SIZE, SIZE)
    one = set_up({"name": "frskd", "width": 8, "bifpn_layers": 1, **FRSKD_HYBRID}, student)
    assert len(one.self_teacher.layers) == 1
    assert sum(p.numel() for p in one.parameters()) < sum(p.numel() for p in method.parameters())


def test_frskd_official_schedule() -> None:
    """α and β stay 0 for two thirds of training, then rise as exp(-5(1 − s)²) to 1."""
    assert ramp_factor(0.6, "official", 2 / 3, 0.3) == 0.0
    assert ramp_factor(2 / 3, "official", 2 / 3, 0.3) == pytest.approx(math.exp(-5))
    assert ramp_factor(0.8, "official", 2 / 3, 0.3) == pytest.approx(math.exp(-5 * 0.6**2))
    assert ramp_factor(1.0, "official", 2 / 3, 0.3) == 1.0
    student, batch = make_student(), {"mask": make_mask()}
    method = set_up({"name": "frskd", "width": 8}, student)
    at_start = method(student, None, batch)
    assert at_start["feature"].item() == 0 and at_start["soft"].item() == 0
    assert at_start["aux_sup"].item() > 0
    method.set_progress(0.6)
    assert method(student, None, batch)["soft"].item() == 0
    method.set_progress(1.0)
    full = method(student, None, batch)
    method.set_progress(0.8)
    ramped = method(student, None, batch)
    for term in ("feature", "soft"):
        assert full[term].item() > 0
        assert ramped[term].item() == pytest.approx(math.exp(-1.8) * full[term].item(), rel=1e-4)


def test_frskd_linear_ramp_option() -> None:
    student, batch = make_student(), {"mask": make_mask()}
    method = set_up({"name": "frskd", "width": 8, "schedule": "linear", "ramp": 0.4}, student)
    assert method(student, None, batch)["soft"].item() == 0
    method.set_progress(1.0)
    full = method(student, None, batch)
    method.set_progress(0.1)
    quarter = method(student, None, batch)
    for term in ("feature", "soft"):
        assert quarter[term].item() == pytest.approx(0.25 * full[term].item(), rel=1e-4)
    no_ramp = set_up({"name": "frskd", "width": 8, "schedule": "none"}, student)
    no_ramp.load_state_dict(method.state_dict())  # same self-teacher: full weight from the start
    from_start = no_ramp(student, None, batch)["soft"].item()
    assert from_start == pytest.approx(full["soft"].item(), rel=1e-4)


def test_frskd_gradients_and_detached_targets() -> None:
    student = make_student()
    method = set_up({"name": "frskd", "width": 8, **FRSKD_HYBRID}, student)
    method.set_progress(1.0)
    losses = method(student, None, {"mask": make_mask()})
    (losses["feature"] + losses["soft"]).backward(retain_graph=True)
    assert all(p.grad is None for p in method.self_teacher.parameters())
    assert all(student[k].grad is not None for k in ("fused1", "fused4", "out"))
    assert student["stage1"].grad is None  # the stages feed only the self-teacher
    losses["aux_sup"].backward()
    assert all(p.grad is not None for p in method.self_teacher.head.parameters())
    assert student["stage1"].grad is not None  # its own loss reaches them, as in the paper


@pytest.mark.parametrize(
    ("spec", "words"),
    [({"levels": ["stage4"]}, "levels"), ({"ramp": 2.0}, "ramp"), ({"gamma": 1.0}, "gamma"),
     ({"schedule": "cosine"}, "schedule"), ({"at_levels": ["fused1"]}, "at_levels"),
     ({"bifpn_layers": 0}, "bifpn_layers")],
)
def test_frskd_option_errors(spec: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_method({"name": "frskd", **spec})


# ---------------------------------------------------------------- Tf-KD
def test_tfkd_self_matches_hand_computed() -> None:
    method = build_method({"name": "tfkd"})
    assert isinstance(method, TfKD) and method.needs_teacher
    assert (method.kd_share, method.temperature) == (0.95, 6.0)
    student = make_student()
    teacher_out = (3 * torch.randn(2, 1, SIZE, SIZE)).requires_grad_()
    kd = method(student, {"out": teacher_out}, {"mask": make_mask()})["kd"]
    expected = 0.95 * np_kl_binary(student["out"], teacher_out, 6.0)
    assert kd.item() == pytest.approx(expected, rel=1e-4)
    kd.backward()
    assert student["out"].grad is not None and teacher_out.grad is None
    with pytest.raises(ValueError, match="teacher"):
        method(student, None, {"mask": make_mask()})


def test_tfkd_reg_virtual_teacher() -> None:
    method = build_method({"name": "tfkd", "mode": "reg"})
    assert not method.needs_teacher
    assert (method.kd_share, method.temperature) == (0.1, 2.0)
    mask = make_mask()
    p_fg = 0.99 ** 0.5 / (0.99 ** 0.5 + 0.01 ** 0.5)  # a^(1/T) normalised, T = 2
    assert p_fg == pytest.approx(0.908675, abs=1e-6)
    probs = torch.sigmoid(virtual_teacher_logits(mask, 0.99, 2.0))
    assert torch.allclose(probs, torch.where(mask > 0, p_fg, 1 - p_fg).float())
    student = make_student()
    reg = method(student, None, {"mask": mask})["reg"]
    p_s = torch.sigmoid(student["out"].detach().double()).numpy()
    p_t = np.where(mask.numpy() > 0, p_fg, 1 - p_fg)
    kl = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    assert reg.item() == pytest.approx(0.1 * kl.mean(), rel=1e-4)
    reg.backward()
    assert student["out"].grad is not None
    # the term is label smoothing: zero once the student predicts p_t itself
    smoothed = torch.where(mask > 0, 1.0, -1.0) * math.log(p_fg / (1 - p_fg))
    at_target = method({"out": smoothed}, None, {"mask": mask})["reg"].item()
    assert at_target == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    ("spec", "words"),
    [({"mode": "bogus"}, "mode"), ({"correct_prob": 0.3}, "correct_prob"),
     ({"temperature": 0.0}, "temperature"), ({"beta": 1.0}, "beta")],
)
def test_tfkd_option_errors(spec: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_method({"name": "tfkd", **spec})


# ---------------------------------------------------------------- with the real fusion network
@pytest.fixture(scope="module")
def fusion_net() -> nn.Module:
    return engine_helpers.fusion_net()  # built once for the module; each test zeroes its gradients first


@pytest.mark.parametrize(
    "spec",
    [{"name": "pspsd", "width": 8}, {"name": "pspsd", "width": 16, "pyramid": "aspp"},
     {"name": "frskd", "width": 8}, {"name": "tfkd", "mode": "reg"}],
)
def test_end_to_end_with_fusion_network(fusion_net: nn.Module, spec: dict) -> None:
    method = build_method(spec)
    method.set_progress(0.5)
    image, batch = torch.randn(2, 3, SIZE, SIZE), {"mask": make_mask()}
    fusion_net.zero_grad(set_to_none=True)
    with FeatureTaps(fusion_net, method.student_taps) as taps:
        fusion_net(image)
        method.setup({k: v.shape for k, v in taps.pop().items()}, None)
        student = {**fusion_net(image), **taps.pop()}
    losses = method(student, None, batch)
    assert set(losses) <= set(type(method).terms)  # what `segkd methods` lists is what it computes
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert fusion_net.predictor.weight.grad is not None
    assert fusion_net.backbone.layer1[0].conv1.weight.grad is not None
    student_ids = {id(p) for p in fusion_net.parameters()}
    assert student_ids.isdisjoint(id(p) for p in method.parameters())
    assert isinstance(method, (PSPSD, FRSKD, TfKD)) and method.kind == "self"
