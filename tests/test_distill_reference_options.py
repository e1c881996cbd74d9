"""Teacher→student methods as their references define them: defaults, exact options, the data's
ignore label, CIRKD's class memories (DDP included) and feature hooks that never outlive an error.

Expected values are written out in plain Python."""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from reference_math import kl, softmax, unit
from torch import nn

from segkd.distill import FeatureTaps
from segkd.distill.base import build_method
from segkd.distill.cirkd import CrossImageRelationalKD
from segkd.distill.cirkd_memory import ClassQueues
from segkd.distill.logits_kd import LogitsKD
from segkd.engine.builders import build_methods, probe
from segkd.engine.distributed import leave_process_group

from engine_helpers import tiny_semantic_config

CIRKD_TAP = CrossImageRelationalKD.tapped  # the key of CIRKD's tap on both sides


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


# ----------------------------------------------------------------------------- logits_kd
def test_logits_kd_defaults_are_the_segmentation_references():
    method = build_method({"name": "logits_kd"})
    assert method.temperature == 1.0 and method.at == "logits"
    assert method.student_taps == method.teacher_taps == {"logits": "logits"}
    # the source repo's formula distils where the source does, unless told otherwise
    assert build_method({"name": "logits_kd", "source_exact": True}).at == "out"
    assert build_method({"name": "logits_kd", "at": "out"}).student_taps == {}


# 3 classes × 1 row × 2 pixels
STUDENT = [[[0.5, -1.0]], [[1.5, 0.3]], [[-0.2, 2.0]]]
TEACHER = [[[1.0, 0.2]], [[-0.5, 0.8]], [[3.0, -1.0]]]


def z_score(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))  # unbiased
    return [(v - mean) / (std + 1e-7) for v in values]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logit_standardization_matches_the_hand_computed_value(temperature):
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    method = LogitsKD(temperature=temperature, standardize=True, weight=0.5)
    out = method({"logits": s}, {"logits": t}, {"mask": torch.tensor([[[2, 255]]])})["kd"].item()
    pixel = [[c[0][0] for c in STUDENT], [c[0][0] for c in TEACHER]]  # only pixel 0 is labelled
    p_s = softmax([v / temperature for v in z_score(pixel[0])])
    p_t = softmax([v / temperature for v in z_score(pixel[1])])
    assert out == pytest.approx(0.5 * kl(p_t, p_s) * temperature**2, rel=1e-5)


def test_logit_standardization_ignores_the_students_scale_and_shift():
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    mask = {"mask": torch.zeros(1, 1, 2, dtype=torch.long)}
    plain, standard = LogitsKD(), LogitsKD(standardize=True)
    values = [(m({"logits": x}, {"logits": t}, mask)["kd"].item()) for m in (plain, standard)
              for x in (s, 3.0 * s + 1.0)]
    assert values[0] != pytest.approx(values[1], rel=1e-2)  # plain KD sees the magnitude
    assert values[2] == pytest.approx(values[3], rel=1e-5)  # standardised KD does not


def test_logit_standardization_needs_class_logits():
    with pytest.raises(ValueError, match="standardize=True needs class logits"):
        LogitsKD(standardize=True)({"logits": torch.zeros(1, 1, 2, 2)}, {"logits": torch.zeros(1, 1, 2, 2)},
                                   {"mask": torch.zeros(1, 1, 2, 2)})
    with pytest.raises(ValueError, match="exclude each other"):
        LogitsKD(standardize=True, source_exact=True)


# ----------------------------------------------------------------------------- ignore index
def test_methods_get_the_datas_ignore_index_and_mask_those_pixels(tmp_path):
    cfg = tiny_semantic_config(tmp_path, data={"ignore_index": 11}, distill={
        "teacher": {"model": {"name": "pspnet", "backbone": "resnet18"}, "checkpoint": "t.pt"},
        "methods": [{"name": "logits_kd"}, {"name": "ifvd", "mean_over": "labelled"}, {"name": "cwd"}]})
    methods = build_methods(cfg)
    assert [m.ignore_index for m in methods] == [11, 11, 11]
    kd, ifvd = methods[0], methods[1]
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    mask = torch.tensor([[[0, 11]]])  # pixel 1 carries CamVid's void label
    moved = s.clone()
    moved[0, :, 0, 1] = torch.tensor([5.0, -3.0, 1.0])  # only the void pixel changes
    assert kd({"logits": s}, {"logits": t}, {"mask": mask})["kd"].item() == pytest.approx(
        kd({"logits": moved}, {"logits": t}, {"mask": mask})["kd"].item(), rel=1e-6)
    # the old fixed 255 is now an ordinary label value: that pixel counts
    assert kd({"logits": s}, {"logits": t}, {"mask": torch.tensor([[[0, 255]]])})["kd"].item() != pytest.approx(
        kd({"logits": moved}, {"logits": t}, {"mask": torch.tensor([[[0, 255]]])})["kd"].item(), rel=1e-3)
    two_classes = torch.tensor([[[0, 0, 1, 11]]])
    feats = torch.randn(1, 4, 1, 4, generator=torch.Generator().manual_seed(0))
    feats_t = torch.randn(1, 4, 1, 4, generator=torch.Generator().manual_seed(1))
    moved_feats = feats.clone()
    moved_feats[..., 3] = 7.0
    ifvd.setup({"ifvd_input": feats.shape}, {"ifvd_input": feats_t.shape})
    a = ifvd({"ifvd_input": feats}, {"ifvd_input": feats_t}, {"mask": two_classes})["ifvd"]
    b = ifvd({"ifvd_input": moved_feats}, {"ifvd_input": feats_t}, {"mask": two_classes})["ifvd"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and a.item() > 0


# ----------------------------------------------------------------------------- FitNets / CWD mappings
def test_feature_kd_plain_conv_mapping_is_the_benchmarks_fitnets():
    method = build_method({"name": "feature_kd", "at": "head", "mapping": "conv"})
    key = next(iter(method.student_taps))
    method.setup({key: torch.Size([1, 2, 1, 1])}, {key: torch.Size([1, 2, 1, 1])})  # same channels
    assert isinstance(method.mapping, nn.Conv2d) and method.mapping.bias is None
    with torch.no_grad():
        method.mapping.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]).view(2, 2, 1, 1))
    s = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    t = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    out = method({key: s}, {key: t}, {})["feature_kd"].item()
    mapped = [1.0 + 2.0 * 3.0, -3.0]  # W·s
    assert out == pytest.approx(((mapped[0] - 2.0) ** 2 + (mapped[1] - 0.0) ** 2) / 2)


@pytest.mark.parametrize(("student_channels", "built"), [(3, False), (5, True)])
def test_cwd_reference_mapping_is_a_plain_conv_only_when_channels_differ(student_channels, built):
    method = build_method({"name": "cwd", "mapping": "auto_conv"})
    key = next(iter(method.student_taps))
    method.setup({key: torch.Size([1, student_channels, 2, 2])}, {key: torch.Size([1, 3, 2, 2])})
    assert isinstance(method.mapping, nn.Conv2d) == built
    assert (method.mapping is None) != built


# ----------------------------------------------------------------------------- CIRKD memory
def cirkd(**options):
    """A CIRKD over 2-channel embeddings, 3 classes, no projection (student = raw embeddings)."""
    method = build_method({"name": "cirkd", "projection": "none", **options})
    method.setup({CIRKD_TAP: torch.Size([1, 2, 1, 3])},
                 {CIRKD_TAP: torch.Size([1, 2, 1, 3]), "out": torch.Size([1, 3, 8, 24])})
    return method


S_PIXELS = [[0.5, 1.5], [-1.0, 0.3], [2.0, -0.7]]  # 3 pixels × 2 channels
T_PIXELS = [[1.0, -0.5], [0.2, 0.8], [0.1, 1.1]]


def as_map(pixels: list[list[float]]) -> torch.Tensor:
    return torch.tensor(pixels).T.reshape(1, 2, 1, len(pixels))


def angle(a: float) -> list[float]:
    return [math.cos(a), math.sin(a)]


def test_cirkd_memory_terms_match_the_hand_computed_value():
    tau, kd_tau = 0.5, 2.0
    method = cirkd(temperature=tau, kd_temperature=kd_tau, pixel_memory_weight=1.0, region_memory_weight=1.0,
                   pixel_memory_size=2, region_memory_size=1, pixel_contrast_size=6,
                   region_contrast_size=3).eval()  # totals over 3 classes: every slot; eval: memory stays
    pixel_bank = [angle(0.3 * k) for k in range(6)]
    region_bank = [angle(-1.0 + k) for k in range(3)]
    method.memory.pixels.copy_(torch.tensor(pixel_bank).view(3, 2, 2))
    method.memory.regions.copy_(torch.tensor(region_bank).view(3, 1, 2))
    mask = torch.tensor([[[0, 2, 255]]])
    out = method({CIRKD_TAP: as_map(S_PIXELS)}, {CIRKD_TAP: as_map(T_PIXELS)}, {"mask": mask})

    def expected(bank: list[list[float]]) -> float:
        rows = [kl(softmax([dot(unit(t), m) / (tau * kd_tau) for m in bank]),
                   softmax([dot(unit(s), m) / (tau * kd_tau) for m in bank]))
                for s, t in zip(S_PIXELS[:2], T_PIXELS[:2])]  # the third pixel is ignored
        return sum(rows) / len(rows) * kd_tau**2

    assert out["cirkd_pixel_memory"].item() == pytest.approx(expected(pixel_bank), rel=1e-5)
    assert out["cirkd_region_memory"].item() == pytest.approx(expected(region_bank), rel=1e-5)


def test_cirkd_memory_terms_are_non_zero_on_the_first_step():
    torch.manual_seed(0)
    method = cirkd(pixel_memory_size=64, region_memory_size=8, pixel_contrast_size=32, region_contrast_size=8)
    out = method({CIRKD_TAP: as_map(S_PIXELS)}, {CIRKD_TAP: as_map(T_PIXELS)},
                 {"mask": torch.tensor([[[0, 1, 2]]])})
    assert out["cirkd_pixel_memory"].item() > 1e-3 and out["cirkd_region_memory"].item() > 1e-3


def test_cirkd_queues_hold_every_class_class_balanced():
    method = cirkd(pixel_memory_size=4, region_memory_size=4, pixels_per_image=8)
    s = torch.cat([as_map(S_PIXELS), as_map(S_PIXELS[::-1])])
    t = torch.cat([as_map(T_PIXELS), as_map(T_PIXELS[::-1])])  # image 1: pixels reversed
    mask = torch.tensor([[[0, 0, 1]], [[2, 255, 1]]])
    method({CIRKD_TAP: s}, {CIRKD_TAP: t}, {"mask": mask})
    memory = method.memory
    assert memory.pixel_next.tolist() == [2, 2, 1]  # class 0: 2 pixels, 1: one per image, 2: one
    assert memory.region_next.tolist() == [1, 2, 1]  # one region per class and image

    def rows(x: torch.Tensor) -> list[tuple[float, ...]]:
        return sorted(tuple(round(v, 5) for v in r) for r in x.tolist())

    u = [unit(p) for p in T_PIXELS]  # image 1 holds T_PIXELS[2], T_PIXELS[1], T_PIXELS[0]
    assert rows(memory.pixels[0, :2]) == rows(torch.tensor([u[0], u[1]]))
    assert rows(memory.pixels[1, :2]) == rows(torch.tensor([u[2], u[0]]))
    assert rows(memory.pixels[2, :1]) == rows(torch.tensor([u[2]]))  # the ignored pixel never enters
    mean01 = unit([(a + b) / 2 for a, b in zip(u[0], u[1])])
    assert rows(memory.regions[0, :1]) == rows(torch.tensor([mean01]))
    assert rows(memory.regions[1, :2]) == rows(torch.tensor([u[2], u[0]]))


def _gather_worker(rank: int, out_dir: str) -> None:
    import torch.distributed as dist

    # a rendezvous file in the test's own folder: no port another process may take meanwhile
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous",
                            rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same random initial memory on both ranks
        queues = ClassQueues(num_classes=2, dim=2, pixel_size=4, region_size=4, pixels_per_image=4)
        own = torch.tensor(unit([1.0, rank + 1.0])).view(1, 2, 1, 1)  # one pixel of class `rank`
        queues.enqueue(own, torch.tensor([[[rank]]]), ignore_index=255)
        torch.save(queues.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
        # the same through the method's training forward: rank r's image is T_PIXELS[r:r + 1]
        method = cirkd(pixel_memory_size=4, region_memory_size=4, pixel_contrast_size=4, region_contrast_size=4)
        pixels = T_PIXELS[rank:rank + 1] * 3
        method({CIRKD_TAP: as_map(pixels)}, {CIRKD_TAP: as_map(pixels)}, {"mask": torch.tensor([[[rank, 255, 255]]])})
        torch.save(method.memory.state_dict(), os.path.join(out_dir, f"method{rank}.pt"))
    finally:
        leave_process_group()  # not destroy_process_group alone: see its docstring


def test_cirkd_memory_gathers_every_ranks_batch(tmp_path):
    mp.spawn(_gather_worker, args=(str(tmp_path),), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for state in states:  # each rank stored both ranks' pixels: class 0 from rank 0, 1 from rank 1
        assert state["region_next"].tolist() == [1, 1] and state["pixel_next"].tolist() == [1, 1]
        for cls in range(2):
            expected = torch.tensor(unit([1.0, cls + 1.0]))
            assert torch.allclose(state["regions"][cls, 0], expected, atol=1e-6)
            assert torch.allclose(state["pixels"][cls, 0], expected, atol=1e-6)
    assert torch.equal(states[0]["pixels"], states[1]["pixels"])
    for rank in range(2):
        memory = torch.load(tmp_path / f"method{rank}.pt")
        assert memory["region_next"].tolist() == [1, 1, 0]  # both ranks' classes, nothing of class 2
        for cls in range(2):
            assert torch.allclose(memory["regions"][cls, 0], torch.tensor(unit(T_PIXELS[cls])), atol=1e-6)


# ----------------------------------------------------------------------------- feature hooks
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return {"out": self.b(self.a(x))}


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_feature_taps_leave_no_hook_when_a_tap_path_is_wrong():
    model = Tiny()
    with pytest.raises(KeyError, match="no module 'nope'"):
        FeatureTaps(model, {"first": "a", "second": "nope"})  # "a" was hooked before the error
    assert hook_count(model) == 0


def test_feature_taps_context_removes_hooks_on_error_and_probe_uses_it():
    model = Tiny()
    with pytest.raises(RuntimeError, match="boom"), FeatureTaps(model, {"f": "a"}):
        assert hook_count(model) == 1
        raise RuntimeError("boom")
    assert hook_count(model) == 0

    class Failing(Tiny):
        def forward(self, x):
            self.a(x)
            raise RuntimeError("forward failed")

    failing = Failing()
    with pytest.raises(RuntimeError, match="forward failed"):
        probe(failing, {"f": "a"}, torch.zeros(1, 3, 2, 2), train_mode=True)
    assert hook_count(failing) == 0


# ----------------------------------------------------------------------------- SKD holistic term
def test_skd_defaults_are_the_authors_code():
    method = build_method({"name": "skd"})
    assert (method.pool_scale, method.pool_size, method.weight) == (0.5, None, 1.0)
    assert (method.adv_weight, method.gp_weight) == (0.1, 10.0)
    assert method.teacher_taps["skd_scores"] == "logits"
    assert "skd_scores" not in build_method({"name": "skd", "adv_weight": 0.0}).student_taps


def test_skd_discriminator_is_the_references_at_its_score_map_size():
    from torch.nn.utils import parametrize

    from segkd.distill.discriminator import ScoreMapDiscriminator, SelfAttention

    critic = ScoreMapDiscriminator(19, (65, 65))  # a 512 crop at output stride 8, 19 classes
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d) and parametrize.is_parametrized(m)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]  # four spectral-norm layers
    assert [a.value.in_channels for a in critic.modules() if isinstance(a, SelfAttention)] == [256, 512]
    assert critic(torch.randn(2, 19, 65, 65)).shape == (2, 1, 1, 1)
    assert ScoreMapDiscriminator(3, (4, 4))(torch.randn(2, 3, 4, 4)).shape == (2, 1, 1, 1)  # tiny maps too


def test_skd_student_term_and_critic_step_are_the_references():
    # a linear critic D(x) = w·x + b per position makes every quantity hand-computable:
    # ∇ₓ Σ D = w at each of the h·w positions, so the penalty is (‖w‖·√(h·w) − 1)² for any mix
    from segkd.distill.critic import SelfTrainedCritic

    method = build_method({"name": "skd", "adv_weight": 0.1, "gp_weight": 10.0})
    net = nn.Conv2d(2, 1, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.6, -0.8]).view(1, 2, 1, 1))  # ‖w‖ = 1
        net.bias.fill_(0.3)
    method.critic = SelfTrainedCritic(net, lr=0.5, weight_decay=0.0, gp_weight=10.0, loss_weight=0.1)
    s = torch.tensor([[[[1.0, 2.0]], [[0.5, -1.0]]]], requires_grad=True)  # 1×2 classes×1×2
    t = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.5]]]])
    terms = method.holistic(s, t)
    d_s = [0.6 * 1.0 - 0.8 * 0.5 + 0.3, 0.6 * 2.0 + 0.8 * 1.0 + 0.3]  # D at each student pixel
    d_t = [0.6 * 0.0 - 0.8 * 2.0 + 0.3, 0.6 * 1.0 - 0.8 * 0.5 + 0.3]
    penalty = (1.0 * math.sqrt(2) - 1) ** 2
    assert terms["skd_adv"].item() == pytest.approx(-0.1 * sum(d_s) / 2, rel=1e-6)
    assert terms["skd_adv_d"].item() == pytest.approx(
        0.1 * (sum(d_s) / 2 - sum(d_t) / 2 + 10.0 * penalty), rel=1e-5)
    assert not terms["skd_adv_d"].requires_grad  # logged only
    # the critic stepped once with its own SGD (lr 0.5, first momentum step = the gradient):
    # ∂/∂w = λ_d (mean s − mean t + λ_gp · 2(‖w‖√2 − 1) √2 w/‖w‖), ∂/∂b = 0
    mean_s, mean_t = s.detach().mean(dim=(0, 2, 3)), t.mean(dim=(0, 2, 3))
    w = torch.tensor([0.6, -0.8])
    grad_w = 0.1 * (mean_s - mean_t + 10.0 * 2 * (math.sqrt(2) - 1) * math.sqrt(2) * w)
    assert torch.allclose(net.weight.detach().view(2), w - 0.5 * grad_w, atol=1e-6)
    assert net.bias.item() == pytest.approx(0.3, abs=1e-7)
    assert all(p.grad is None for p in net.parameters())  # nothing left for another optimiser
    # the student's gradient comes from the critic as it was before its step: −λ_d · w / (h·w)
    terms["skd_adv"].backward()
    expected_s = w.view(1, 2, 1, 1).expand(1, 2, 1, 2) * (-0.1 / 2)
    assert torch.allclose(s.grad, expected_s, atol=1e-7)
    assert all(p.grad is None for p in net.parameters())


def test_logits_kd_compares_a_student_at_another_stride_at_the_teachers_size():
    torch.manual_seed(0)
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)
    mask = torch.tensor([[[0, 1], [255, 2]]])
    out = LogitsKD()({"logits": s}, {"logits": t}, {"mask": mask})["kd"].item()
    small = torch.nn.functional.interpolate(s, size=(2, 2), mode="bilinear", align_corners=False)
    rows = [kl(softmax(t[0, :, i, j].tolist()), softmax(small[0, :, i, j].tolist()))
            for i, j in ((0, 0), (0, 1), (1, 1))]
    assert out == pytest.approx(sum(rows) / 3, rel=1e-5)


def test_logits_kd_falls_back_to_out_for_a_model_without_a_logits_point():
    from segkd.engine.builders import prepare_methods
    from segkd.models import build_model

    plain = Tiny()  # a user's network: no feature points at all
    pspnet = build_model("pspnet", backbone="resnet18", num_classes=2, output_stride=8)
    example = torch.randn(2, 3, 32, 32)
    unset, explicit = build_method({"name": "logits_kd"}), build_method({"name": "logits_kd", "at": "logits"})
    assert prepare_methods(nn.ModuleList([unset]), plain, pspnet.eval(), example) == ({}, {})
    assert unset.at == "out"
    both = build_method({"name": "logits_kd"})
    student_taps, _ = prepare_methods(nn.ModuleList([both]), pspnet, copy.deepcopy(pspnet).eval(), example)
    assert both.at == "logits" and student_taps == {"logits": "logits"}
    with pytest.raises(KeyError, match="no module 'logits'"):  # asked for explicitly: no silent change
        prepare_methods(nn.ModuleList([explicit]), plain, pspnet.eval(), example)
