"""Self-distillation methods BYOT, DHM, SAD and DKS on tiny tensors, checked against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_math import np_kl_binary, np_sigmoid
from torch import nn

from segkd.distill.base import build_method
from segkd.distill.byot import BYOT
from segkd.distill.dhm import DHM
from segkd.distill.dks import DKS, pool_logits
from segkd.distill.functional import mutual_kl_binary
from segkd.distill.hooks import FeatureTaps
from segkd.distill.sad import SAD, attention_map
from segkd.models.losses import structure_loss

from engine_helpers import fusion_net

B, H, W = 2, 16, 16


def np_pairwise_kl(logits: list[torch.Tensor], t: float) -> float:
    return sum(
        np_kl_binary(zi, zj, t) for i, zi in enumerate(logits) for j, zj in enumerate(logits)
        if i != j
    )


def np_resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of the last two axes, half-pixel centres (align_corners=False)."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        matrix = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(np.floor(src)), n_in - 1)
            hi = min(lo + 1, n_in - 1)
            matrix[o, lo] += 1 - (src - lo)
            matrix[o, hi] += src - lo
        return matrix
    return weights(x.shape[-2], out_h) @ x @ weights(x.shape[-1], out_w).T


def np_attention(feature: torch.Tensor, size: tuple[int, int], normalize: bool = False) -> np.ndarray:
    energy = (feature.detach().double().numpy() ** 2).sum(axis=1)  # B×h×w
    energy = np_resize_bilinear(energy, *size).reshape(energy.shape[0], -1)
    if normalize:  # z-score scale: divide by the (unbiased) spatial standard deviation
        mean = energy.mean(axis=1, keepdims=True)
        energy = (energy - mean) / (energy.std(axis=1, ddof=1, keepdims=True) + 1e-4 * mean + 1e-12)
    soft = np.exp(energy - energy.max(axis=1, keepdims=True))
    return (soft / soft.sum(axis=1, keepdims=True)).reshape(-1, *size)


def features(channels: dict[str, int], sizes: dict[str, int], grad: bool = True) -> dict:
    torch.manual_seed(0)
    taps = {k: torch.rand(B, c, sizes[k], sizes[k]) for k, c in channels.items()}
    taps["out"] = torch.randn(B, 1, H, W) * 2
    return {k: v.requires_grad_(grad) for k, v in taps.items()}


def binary_batch() -> dict[str, torch.Tensor]:
    mask = torch.zeros(B, 1, H, W)
    mask[:, :, 4:12, 3:10] = 1
    return {"image": torch.zeros(B, 3, H, W), "mask": mask}


def shapes_of(student: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in student.items()}


RESNET_LIKE = {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}
ODD = {"stage1": 3, "stage2": 5, "stage3": 7, "stage4": 9}
SIZES = {"stage1": 8, "stage2": 4, "stage3": 2, "stage4": 1}


@pytest.mark.parametrize("cls", [BYOT, DHM, SAD, DKS])
def test_methods_are_binary_self_distillation(cls: type) -> None:
    assert (cls.kind, cls.task, cls.needs_teacher) == ("self", "binary", False)
    assert cls.paper


# ---- BYOT -------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [RESNET_LIKE, ODD])
def test_byot_builds_from_shapes(channels: dict[str, int]) -> None:
    student = features(channels, SIZES)
    method = BYOT()
    method.setup(shapes_of(student), None)
    for stage, (feature, logits) in zip(method.stages, method.branch_outputs(student, (H, W))):
        assert feature.shape == student["stage4"].shape, stage
        assert logits.shape == (B, 1, H, W)
    assert [h[0].in_channels for h in method.heads] == [channels["stage4"]] * 3


def test_byot_value_matches_numpy() -> None:
    student = features({"s1": 4, "s2": 6, "deep": 8}, {"s1": 8, "s2": 4, "deep": 2})
    method = BYOT(stages=["s1", "s2"], deepest="deep", temperature=2.0, kd_share=0.3, hint_weight=0.01, hint_on="map")
    method.setup(shapes_of(student), None)
    batch = binary_batch()
    losses = method(student, None, batch)
    branches = method.branch_outputs(student, (H, W))
    deep = student["deep"].detach().double().numpy()
    sup = sum(structure_loss(z, batch["mask"]).item() for _, z in branches)
    kd = sum(np_kl_binary(z, student["out"], 2.0) for _, z in branches)
    hint = sum(((f.detach().double().numpy() - deep) ** 2).sum() / B for f, _ in branches)
    assert losses["aux_sup"].item() == pytest.approx(0.7 * sup, rel=1e-5)
    assert losses["kd"].item() == pytest.approx(0.3 * kd, rel=1e-5)
    assert losses["hint"].item() == pytest.approx(0.01 * hint, rel=1e-5)


def test_byot_gradients_skip_its_targets() -> None:
    student = features(RESNET_LIKE, SIZES)
    method = BYOT()
    method.setup(shapes_of(student), None)
    sum(method(student, None, binary_batch()).values()).backward()
    for stage in ("stage1", "stage2", "stage3"):
        assert student[stage].grad is not None and student[stage].grad.abs().sum() > 0
    assert student["out"].grad is None and student["stage4"].grad is None


def test_byot_option_errors() -> None:
    with pytest.raises(ValueError, match="kd_share"):
        build_method({"name": "byot", "kd_share": 1.5})
    with pytest.raises(ValueError, match="temprature"):
        build_method({"name": "byot", "temprature": 3})
    with pytest.raises(KeyError, match="stage4"):
        BYOT().setup({"stage1": torch.Size([1, 4, 8, 8])}, None)


# ---- DHM --------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """Stand-in for a user's network without ``decode``: four stride-2 conv stages, a 1×1 head."""

    def __init__(self, channels: tuple[int, ...] = (4, 6, 8, 10)) -> None:
        super().__init__()
        self.backbone = nn.Module()
        for k, (c_in, c_out) in enumerate(zip((3, *channels), channels), start=1):
            conv = nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.ReLU())
            self.backbone.add_module(f"layer{k}", conv)
        self.head = nn.Conv2d(channels[-1], 1, 1)
        self.feature_points = {f"stage{k}": f"backbone.layer{k}" for k in range(1, 5)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = x
        for k in range(1, 5):
            f = getattr(self.backbone, f"layer{k}")(f)
        out = nn.functional.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear")
        return {"out": out}


def bound_run(cls: type, net: nn.Module, size: int = H, **options) -> tuple:
    """Bind, tap, set up and run a branch method on ``net`` the way a trainer would."""
    method = cls(**options)
    method.bind(net, None)
    with FeatureTaps(net, method.student_taps) as taps:
        student = {**net(torch.randn(B, 3, size, size)), **taps.pop()}
    method.setup(shapes_of(student), None)
    return method, student


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Equal parameters (BN running statistics move with every training-mode forward)."""
    pairs = list(zip(a.parameters(), b.parameters(), strict=True))
    return all(torch.equal(x, y) for x, y in pairs)


def test_branches_copy_later_stages_and_build_a_fresh_decoder() -> None:
    net = fusion_net()
    method, student = bound_run(DHM, net, size=32)
    assert [len(b.segments) for b in method.branches] == [2, 1]  # stage2: layer3, layer4; stage3: layer4
    layer3, layer4 = net.backbone.layer3, net.backbone.layer4
    for copy, original in [(method.branches[0].segments[0][0], layer3),
                           (method.branches[0].segments[1][0], layer4),
                           (method.branches[1].segments[0][0], layer4)]:
        assert same_weights(copy, original)
    assert not {id(p) for p in net.parameters()} & {id(p) for p in method.parameters()}
    for branch in method.branches:
        decoder = branch.decoder
        assert isinstance(decoder.backbone, nn.Identity)  # the backbone is not duplicated
        assert [p.shape for p in decoder.parameters()] == [
            p.shape for n, p in net.named_parameters() if not n.startswith("backbone.")]
        # re-drawn, not copied: an exact replica of the student would never differ from ``out``
        assert not torch.equal(decoder.fusers[0][0].weight, net.fusers[0][0].weight)
    logits = method.branch_logits(student, (32, 32))
    assert all(z.shape == (B, 1, 32, 32) for z in logits)
    with torch.no_grad():
        layer4[0].conv1.weight.add_(1.0)
    assert not same_weights(method.branches[1].segments[0][0], layer4)


def test_branches_run_the_blocks_between_feature_stages() -> None:
    """EfficientNet's feature maps come from blocks 2, 4 and 6; blocks 3 and 5 run in between."""
    net = fusion_net("efficientnet_lite0")
    method, student = bound_run(DHM, net, size=64)
    assert net.feature_points["stage2"] == "backbone.blocks.2"
    assert [[len(s) for s in b.segments] for b in method.branches] == [[2, 2], [2]]
    shared = [student[f"stage{i}"] for i in (1, 2)]
    features = list(shared)
    for segment in method.branches[0].segments:
        features.append(segment(features[-1]))
    assert [f.shape for f in features] == [student[f"stage{i}"].shape for i in range(1, 5)]
    assert all(z.shape == (B, 1, 64, 64) for z in method.branch_logits(student, (64, 64)))


def test_dhm_copies_leave_the_students_hooks_behind() -> None:
    net, calls = fusion_net(), []
    net.backbone.layer4.register_forward_hook(lambda *_: calls.append(1))
    net.predictor.register_forward_hook(lambda *_: calls.append(2))
    method, student = bound_run(DHM, net, size=32)
    calls.clear()
    method.branch_logits(student, (32, 32))
    assert calls == []


@pytest.mark.parametrize("decoder", ["copy", "head"])
def test_dhm_value_matches_numpy(decoder: str) -> None:
    net = TinyNet() if decoder == "head" else fusion_net()
    method, student = bound_run(DHM, net, temperature=2.0, mimic_weight=0.5, aux_sup_weight=2.0, decoder=decoder)
    if decoder == "head":
        assert method.branches[0].head[0].in_channels == 10  # the deepest stage's channels
    batch = binary_batch()
    losses = method(student, None, batch)
    logits = method.branch_logits(student, (H, W))
    assert all(z.shape == (B, 1, H, W) for z in logits)
    sup = sum(structure_loss(z, batch["mask"]).item() for z in logits)
    assert losses["aux_sup"].item() == pytest.approx(2.0 * sup, rel=1e-5)
    mimic = np_pairwise_kl([student["out"], *logits], 2.0)
    assert losses["mimic"].item() == pytest.approx(0.5 * mimic, rel=1e-5) and mimic > 0


def test_dhm_errors() -> None:
    with pytest.raises(ValueError, match="branch_from"):
        build_method({"name": "dhm", "branch_from": ["stage4"]})
    with pytest.raises(ValueError, match="decoder"):
        build_method({"name": "dhm", "decoder": "big"})
    with pytest.raises(KeyError, match="backbone.layer9"):
        DHM(stages=["stage1", "backbone.layer9"], branch_from=["stage1"]).bind(TinyNet(), None)
    with pytest.raises(ValueError, match="decoder='head'"):
        DHM().bind(TinyNet(), None)  # no decode(): the default cannot copy a decoder
    method = DHM()
    method.setup({f"stage{i}": torch.Size([1, 8, 2, 2]) for i in range(1, 5)}, None)
    with pytest.raises(RuntimeError, match="bind"):
        method(features(RESNET_LIKE, SIZES), None, binary_batch())


def test_dhm_copied_stages_train_at_the_backbone_lr(tmp_path) -> None:
    from segkd.engine.builders import build_optimizer

    from engine_helpers import tiny_binary_config

    cfg = tiny_binary_config(tmp_path, optim={"lr": 0.01, "backbone_lr_mult": 0.1, "head_lr_mult": 1.0})
    net = fusion_net()
    method, _ = bound_run(DHM, net, size=32)
    optimizer = build_optimizer(cfg, net, nn.ModuleList([method]))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    copied = [p for b in method.branches for p in b.segments.parameters()]
    decoders = [p for b in method.branches for p in b.decoder.parameters()]
    assert copied and all(lr_of[id(p)] == pytest.approx(0.001) for p in copied)
    assert all(lr_of[id(p)] == pytest.approx(0.01) for p in decoders)
    assert all(lr_of[id(p)] == pytest.approx(0.001) for p in net.backbone.parameters())
    assert len(lr_of) == len(list(net.parameters())) + len(list(method.parameters()))
    # a method that misplaces a parameter is an error, not a parameter left untrained
    method.param_groups = lambda: {"backbone": copied, "head": []}
    with pytest.raises(ValueError, match="each of its parameters once"):
        build_optimizer(cfg, net, nn.ModuleList([method]))


# ---- SAD --------------------------------------------------------------------------------------
def test_sad_attention_map_matches_numpy() -> None:
    feature = torch.rand(B, 3, 2, 2) * 2
    expected = np_attention(feature, (4, 4))
    np.testing.assert_allclose(attention_map(feature, (4, 4)).numpy(), expected, rtol=1e-5)
    assert attention_map(feature, (4, 4)).sum(dim=(1, 2)).allclose(torch.ones(B))
    mean_map = attention_map(feature, (2, 2), channel_reduction="mean")
    np.testing.assert_allclose(mean_map.numpy(), np_attention(feature / 3**0.5, (2, 2)), rtol=1e-5)


def test_sad_value_and_late_start() -> None:
    student = features({"a": 3, "b": 5, "c": 7}, {"a": 8, "b": 4, "c": 2})
    method = SAD(stages=["a", "b", "c"], weight=0.5, start=0.5)
    assert method(student, None, {})["attention"].item() == 0.0
    method.set_progress(0.3)
    assert method(student, None, {})["attention"].item() == 0.0
    method.set_progress(0.6)
    loss = method(student, None, {})["attention"]
    maps = [np_attention(student[k], (8, 8), normalize=True) for k in "abc"]
    expected = ((maps[0] - maps[1]) ** 2).mean() + ((maps[1] - maps[2]) ** 2).mean()
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-4) and loss.item() > 0
    loss.backward()
    assert student["a"].grad.abs().sum() > 0 and student["b"].grad.abs().sum() > 0
    assert student["c"].grad is None  # the deepest map is only ever a target


def test_sad_defaults_are_the_references_three_blocks() -> None:
    method = build_method({"name": "sad", "start": 0.0})
    assert method.stages == ("stage2", "stage3", "stage4") and method.normalize
    student = features(RESNET_LIKE, SIZES)
    loss = method(student, None, {})["attention"].item()
    maps = [np_attention(student[f"stage{k}"], (4, 4), normalize=True) for k in (2, 3, 4)]
    expected = 0.1 * sum(((m - n) ** 2).mean() for m, n in zip(maps, maps[1:]))  # two MSE terms
    assert loss == pytest.approx(expected, rel=1e-4)


def test_sad_normalised_energy_does_not_saturate() -> None:
    """Large energies (wide pretrained stages) make the plain softmax one-hot; z-scores do not."""
    torch.manual_seed(0)
    feature = torch.rand(B, 64, 8, 8) * 3
    plain = attention_map(feature, (8, 8))
    assert plain.flatten(1).max(1).values.min() > 0.99
    normalised = attention_map(feature, (8, 8), normalize=True)
    assert normalised.flatten(1).max(1).values.max() < 0.5
    # scale-free: ten times stronger features give the same map (the plain one only sharpens)
    assert torch.allclose(attention_map(10 * feature, (8, 8), normalize=True), normalised, atol=1e-5)
    np.testing.assert_allclose(normalised.numpy(), np_attention(feature, (8, 8), True), rtol=1e-4)
    assert torch.allclose(normalised.sum(dim=(1, 2)), torch.ones(B))


def test_sad_size_option_and_errors() -> None:
    student = features({"a": 3, "b": 5}, {"a": 8, "b": 4})
    spec = {"name": "sad", "stages": ["a", "b"], "start": 0.0, "size": [4, 4], "normalize": False}
    method = build_method(spec)
    maps = [np_attention(student[k], (4, 4)) for k in "ab"]
    expected = 0.1 * ((maps[0] - maps[1]) ** 2).mean()
    assert method(student, None, {})["attention"].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="channel_reduction"):
        build_method({"name": "sad", "channel_reduction": "max"})
    with pytest.raises(ValueError, match="start"):
        build_method({"name": "sad", "start": 2})


# ---- DKS --------------------------------------------------------------------------------------
def test_dks_value_matches_numpy() -> None:
    method, student = bound_run(DKS, fusion_net(), temperature=1.5, aux_sup_weight=0.5, synergy_weight=2.0)
    batch = binary_batch()
    losses = method(student, None, batch)
    logits = method.branch_logits(student, (H, W))
    sup = sum(structure_loss(z, batch["mask"]).item() for z in logits)
    assert losses["aux_sup"].item() == pytest.approx(0.5 * sup, rel=1e-5)
    # every ordered pair of heads, out included both ways (the authors' code)
    synergy = np_pairwise_kl([student["out"], *logits], 1.5)
    assert losses["synergy"].item() == pytest.approx(2.0 * synergy, rel=1e-5)


def test_dks_synergy_at_branches_matches_at_the_coarse_resolution() -> None:
    method, student = bound_run(DKS, fusion_net(), size=64, temperature=2.0, synergy_at="branches")
    batch = {"mask": (torch.rand(B, 1, 64, 64) > 0.5).float()}
    losses = method(student, None, batch)
    shared = [student[s] for s in method.stages]
    coarse = [b.native(shared[: method.stages.index(f) + 1]) for f, b in zip(method.branch_from, method.branches)]
    h, w = coarse[0].shape[-2:]
    assert (h, w) == student["stage4"].shape[-2:] and h < 64
    # out's softened probabilities σ(z/T) averaged over each coarse cell, back to logits (times T)
    prob = np_sigmoid(student["out"].detach().double().numpy() / 2.0)
    cells = prob.reshape(B, 1, h, 64 // h, w, 64 // w).mean(axis=(3, 5))
    pooled = torch.from_numpy(2.0 * np.log(cells / (1 - cells)))
    assert losses["synergy"].item() == pytest.approx(np_pairwise_kl([pooled, *coarse], 2.0), rel=1e-4)
    sup = sum(structure_loss(z, batch["mask"]).item() for z in method.branch_logits(student, (64, 64)))
    assert losses["aux_sup"].item() == pytest.approx(sup, rel=1e-5)
    with pytest.raises(RuntimeError, match="setup"):  # used before its branches exist: named, not a stack error
        DKS(synergy_at="branches")(student, None, batch)
    default = build_method({"name": "dks"})
    assert default.synergy_at == "input"
    with pytest.raises(ValueError, match="synergy_at"):
        build_method({"name": "dks", "synergy_at": "middle"})


@pytest.mark.parametrize("value", [-30.0, -12.0, 0.5, 12.0, 20.0])
def test_pooled_logits_of_a_confident_cell_keep_their_value_and_gradient(value) -> None:
    out = torch.full((1, 1, 32, 32), value, requires_grad=True)
    pooled = pool_logits(out, (1, 1), temperature=2.0)
    assert pooled.item() == pytest.approx(value, rel=1e-5)  # a constant cell pools to itself
    pooled.sum().backward()
    assert out.grad.sum().item() == pytest.approx(1.0, rel=1e-4)  # a shift of the cell shifts its pooled logit


def test_dks_branches_are_fresh_residual_stages_down_to_the_deepest_stage() -> None:
    net = fusion_net()
    method, student = bound_run(DKS, net, size=32)
    student_params = {id(p) for p in net.parameters()}
    assert not student_params & {id(p) for p in method.parameters()}
    # stage2 → (stage3, stage4): two residual stages; stage3 → stage4: one; each to the stage's channels
    widths = [[stage[0].conv2.out_channels for stage in branch.stages] for branch in method.branches]
    assert widths == [[student["stage3"].shape[1], student["stage4"].shape[1]], [student["stage4"].shape[1]]]
    for branch, fork in zip(method.branches, ("stage2", "stage3")):
        assert branch.stages(student[fork]).shape == student["stage4"].shape
    assert method.param_groups()["backbone"] == []  # new layers, at the head's LR
    assert all(z.shape == (B, 1, 32, 32) for z in method.branch_logits(student, (32, 32)))


def test_dks_gradient_reaches_out_from_every_branch() -> None:
    method, student = bound_run(DKS, fusion_net(), temperature=2.0)
    student["out"] = student["out"].detach().requires_grad_()
    method(student, None, binary_batch())["synergy"].backward()
    # d/dz_s [T²·KL(σ(z_t/T) ‖ σ(z_s/T))] = T·(σ(z_s/T) − σ(z_t/T)) per pixel, / pixel count
    out = student["out"].detach().double().numpy()
    expected = sum(
        2.0 * (np_sigmoid(out / 2.0) - np_sigmoid(z.detach().double().numpy() / 2.0)) / out.size
        for z in method.branch_logits(student, (H, W))
    )
    np.testing.assert_allclose(student["out"].grad.numpy(), expected, rtol=1e-4, atol=1e-8)


def test_mutual_kl_binary_pairs() -> None:
    logits = [torch.randn(1, 1, 3, 3) for _ in range(3)]
    expected = np_pairwise_kl(logits, 1.0)
    assert mutual_kl_binary(logits, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_dks_option_errors() -> None:
    with pytest.raises(ValueError, match="branch_from"):
        build_method({"name": "dks", "branch_from": []})
    with pytest.raises(ValueError, match="temperature"):
        build_method({"name": "dks", "temperature": 0})
    with pytest.raises(ValueError, match="blocks"):
        build_method({"name": "dks", "blocks": 0})
    with pytest.raises(ValueError, match="decoder"):
        build_method({"name": "dks", "decoder": "copy"})  # DHM's option, not DKS's
    with pytest.raises(KeyError, match="stage3"):
        DKS().setup({"stage2": torch.Size([1, 4, 8, 8])}, None)


# ---- with the real four-level fusion network ---------------------------------------------------
@pytest.mark.parametrize("name", ["byot", "dhm", "sad", "dks"])
def test_methods_run_on_the_fusion_network(name: str) -> None:
    net = fusion_net()
    method = build_method({"name": name, **({"start": 0.0} if name == "sad" else {})})
    method.bind(net, None)
    x, batch = torch.randn(B, 3, 32, 32), {"mask": (torch.rand(B, 1, 32, 32) > 0.5).float()}
    with FeatureTaps(net, method.student_taps) as taps:
        student = {**net(x), **taps.pop()}
    method.setup(shapes_of(student), None)
    losses = method(student, None, batch)
    assert set(losses) == set(type(method).terms)  # what `segkd methods` lists is what it computes
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    # timm zero-initialises each block's last BN, so the stem is where gradients surely arrive
    assert net.backbone.conv1.weight.grad.abs().sum() > 0
    if name == "dhm":
        assert torch.equal(method.branches[1].segments[0][0].state_dict()["0.conv1.weight"],
                           net.backbone.layer4.state_dict()["0.conv1.weight"])


def test_segkd_methods_lists_each_methods_terms(capsys) -> None:
    from segkd.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("byot", "dhm", "sad", "dks", "frskd", "tfkd", "pspsd"):
        block = out[out.index(f"{name}  ["):].splitlines()
        terms_line = next(line for line in block[1:6] if line.strip().startswith("terms:"))
        for term in build_method({"name": name}).terms:
            assert f"{term} (" in terms_line, (name, term)
