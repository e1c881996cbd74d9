"""Each method as its authors' code has it: CIRKD's memory sample, SKD's self-trained critic,
the named full recipes, FRSKD's neck, BYOT's hint, DKS apart from DHM, KD's ignore mask."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from segkd.distill import build_method
from segkd.engine import builders
from segkd.engine.distiller import Distiller
from segkd.engine.trainer import training_losses

from engine_helpers import tiny_semantic_config


# ----------------------------------------------------------------------------- CIRKD
@pytest.mark.parametrize("num_classes", [3, 19])
def test_cirkd_samples_the_contrast_totals_divided_by_the_class_count(num_classes, monkeypatch):
    from segkd.distill import cirkd as cirkd_module

    method = build_method({"name": "cirkd", "pixel_memory_size": 300, "region_memory_size": 60})
    shapes = {"cirkd_input": torch.Size([2, 8, 4, 4]), "out": torch.Size([2, num_classes, 4, 4])}
    method.setup(shapes, shapes)
    banks = []
    real = cirkd_module.memory_kl
    monkeypatch.setattr(cirkd_module, "memory_kl", lambda a, t, v, bank, *rest: banks.append(bank) or real(
        a, t, v, bank, *rest))
    student = {"cirkd_input": torch.randn(2, 8, 4, 4)}
    teacher = {"cirkd_input": torch.randn(2, 8, 4, 4)}
    method.eval()(student, teacher, {"mask": torch.randint(0, num_classes, (2, 4, 4))})
    # the reference's training script: 4096 // K + 1 pixel and 1024 // K + 1 region slots per class
    assert [b.shape[0] for b in banks] == [num_classes * min(4096 // num_classes + 1, 300),
                                          num_classes * min(1024 // num_classes + 1, 60)]
    assert method.per_class == {"pixel_contrast_size": 4096 // num_classes + 1,
                                "region_contrast_size": 1024 // num_classes + 1}


# ----------------------------------------------------------------------------- SKD's critic
def _skd_run(tmp_path, share: float, head_lr_mult: float):
    teacher = {"model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
               "checkpoint": str(tmp_path / "unused.pt")}
    cfg = tiny_semantic_config(tmp_path, distill={"teacher": teacher, "methods": [{"name": "skd"}]},
                               loss={"distill_share": share}, optim={"head_lr_mult": head_lr_mult})
    torch.manual_seed(0)
    student = builders.build_student(cfg)
    teacher_model = builders.build_student(cfg).eval().requires_grad_(False)
    images, mask = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    distiller = Distiller(student, teacher_model, builders.build_methods(cfg), example=images)
    return cfg, student, distiller, {"image": images, "mask": mask}


def test_skd_critic_trains_at_its_own_rate_whatever_the_share_and_head_lr(tmp_path):
    critics = []
    for share, head_lr_mult in [(0.5, 1.0), (1.0, 1.0), (0.5, 10.0), (1.0, 10.0)]:
        cfg, student, distiller, batch = _skd_run(tmp_path / f"{share}_{head_lr_mult}", share, head_lr_mult)
        critic = distiller.methods[0].critic
        optimizer = builders.build_optimizer(cfg, student, distiller.methods)
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert not in_optimizer & {id(p) for p in critic.parameters()}  # the student's SGD never holds D
        assert critic.lr == pytest.approx(4e-4)
        torch.manual_seed(1)  # the same gradient-penalty draw in every run
        losses = training_losses(cfg, student, distiller, batch, torch.device("cpu"))
        assert losses["skd/skd_adv_d"].requires_grad is False  # logged, never back-propagated
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        critics.append([p.detach().clone() for p in critic.parameters()])
    for other in critics[1:]:
        assert all(torch.equal(a, b) for a, b in zip(critics[0], other))
    assert not all(torch.equal(a, b) for a, b in zip(critics[0], _skd_run(tmp_path / "fresh", 1.0, 1.0)[2]
                                                      .methods[0].critic.parameters()))  # D did move


def _skd_with_critic(seed: int = 0):
    torch.manual_seed(seed)
    method = build_method({"name": "skd"})
    shapes = {"skd_input": torch.Size([2, 8, 8, 8]), "skd_scores": torch.Size([2, 3, 16, 16])}
    method.setup(shapes, shapes)
    return method


def _skd_step(method, seed: int):
    torch.manual_seed(seed)
    s = {k: torch.randn(2, *shape, requires_grad=True) for k, shape in
         (("skd_input", (8, 8, 8)), ("skd_scores", (3, 16, 16)), ("out", (3, 16, 16)))}
    t = {k: torch.randn_like(v) for k, v in s.items()}
    return method(s, t, {})


def test_skd_critic_resumes_exactly_from_a_weights_only_checkpoint():
    method = _skd_with_critic()
    for step in range(3):
        method.set_progress(step / 10)
        _skd_step(method, step)
    buffer = io.BytesIO()
    torch.save(nn.ModuleList([method]).state_dict(), buffer)
    buffer.seek(0)
    resumed = _skd_with_critic(seed=7)  # other initial weights: everything must come from the file
    nn.ModuleList([resumed]).load_state_dict(torch.load(buffer, weights_only=True))
    momentum = [resumed.critic.optimizer.state[p]["momentum_buffer"] for p in resumed.critic.parameters()]
    assert all(m.abs().sum() > 0 for m in momentum)
    for model in (method, resumed):
        model.set_progress(0.3)
        _skd_step(model, 3)
    assert resumed.critic.lr == pytest.approx(4e-4 * 0.7 ** 0.9)
    for a, b in zip(method.critic.state_dict().values(), resumed.critic.state_dict().values()):
        assert torch.equal(a, b) if torch.is_tensor(a) else a.keys() == b.keys()


# ----------------------------------------------------------------------------- named full recipes
@pytest.mark.parametrize("name, parts", [
    ("skd_full", {"logits_kd/kd": ("logits_kd", {"temperature": 1.0, "weight": 10.0, "at": "logits"}),
                  "skd/skd_pairwise": ("skd", {"adv_weight": 0.0})}),
    ("ifvd_full", {"logits_kd/kd": ("logits_kd", {"temperature": 1.0, "weight": 10.0, "at": "logits"}),
                   "ifvd/ifvd": ("ifvd", {})}),
])
def test_full_recipes_are_their_parts_at_the_papers_weights(tmp_path, name, parts):
    teacher = {"model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
               "checkpoint": str(tmp_path / "unused.pt")}
    images, mask = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    mask[:, :4] = 255

    def losses(specs):
        cfg = tiny_semantic_config(tmp_path, distill={"teacher": teacher, "methods": specs})
        torch.manual_seed(0)
        student = builders.build_student(cfg).eval()
        teacher_model = builders.build_student(cfg).eval().requires_grad_(False)
        distiller = Distiller(student, teacher_model, builders.build_methods(cfg), example=images)
        return distiller, training_losses(cfg, student, distiller, {"image": images, "mask": mask},
                                          torch.device("cpu"))

    distiller, whole = losses([{"name": name}])
    recipe = distiller.methods[0]
    assert {k.split("/")[1] for k in whole if "/" in k} == set(type(recipe).terms)
    for term, (part, options) in parts.items():
        alone = losses([{"name": part, **options}])[1][term]
        assert whole[f"{name}/{term.split('/')[1]}"].item() == pytest.approx(alone.item(), rel=1e-5)
    critic = recipe.parts[-1].critic
    assert isinstance(critic.optimizer, torch.optim.Adam if name == "ifvd_full" else torch.optim.SGD)
    assert recipe.parts[-1].adv_weight == (0.001 if name == "ifvd_full" else 0.1)
    assert all(part.ignore_index == 255 for part in recipe.parts)


# ----------------------------------------------------------------------------- BYOT's hint
def test_byot_hint_is_on_pooled_features_where_either_is_positive_summed_over_the_batch():
    from segkd.distill.byot import BYOT

    torch.manual_seed(0)
    student = {"s1": torch.randn(2, 4, 8, 8), "deep": torch.randn(2, 8, 2, 2), "out": torch.randn(2, 1, 16, 16)}
    method = BYOT(stages=["s1"], deepest="deep", hint_weight=1.0)
    assert method.hint_on == "pooled"
    method.setup({k: v.shape for k, v in student.items()}, None)
    losses = method(student, None, {"mask": (torch.rand(2, 1, 16, 16) > 0.5).float()})
    feature = method.branch_outputs(student, (16, 16))[0][0].detach()
    pooled, target = feature.mean(dim=(2, 3)), student["deep"].mean(dim=(2, 3))
    expected = sum(float((a - b) ** 2) for row, row_t in zip(pooled, target)
                   for a, b in zip(row, row_t) if a > 0 or b > 0)
    assert losses["hint"].item() == pytest.approx(expected, rel=1e-5)
    full_map = BYOT(stages=["s1"], deepest="deep", hint_weight=1.0, hint_on="map")
    full_map.setup({k: v.shape for k, v in student.items()}, None)
    full_map.load_state_dict(method.state_dict())
    on_maps = full_map(student, None, {"mask": torch.zeros(2, 1, 16, 16)})["hint"].item()
    assert on_maps != pytest.approx(expected, rel=0.1)  # the former full-map term, kept as an option


# ----------------------------------------------------------------------------- FRSKD's neck
def test_frskd_default_self_teacher_reads_the_neck_and_transfers_attention_there():
    from segkd.distill.hooks import FeatureTaps
    from segkd.models.fusion import fusion

    torch.manual_seed(0)
    net = fusion(backbone="resnet18", width=8)
    method = build_method({"name": "frskd"})
    neck = [f"fused{i}" for i in range(1, 5)]
    assert list(method.levels) == neck and list(method.at_levels) == neck
    assert set(method.student_taps) == set(neck)  # no backbone stage is read
    x = torch.randn(2, 3, 64, 64)
    with FeatureTaps(net, method.student_taps) as taps:
        student = {**net(x), **taps.pop()}
    method.setup({k: v.shape for k, v in student.items()}, None)
    assert [lateral[0].in_channels for lateral in method.self_teacher.laterals] == [8] * 4  # the neck's width
    method.set_progress(1.0)
    losses = method(student, None, {"mask": (torch.rand(2, 1, 64, 64) > 0.5).float()})
    losses["feature"].backward()
    assert net.fusers[0][0].weight.grad is not None  # attention transfer reaches the neck


# ----------------------------------------------------------------------------- DKS apart from DHM
def test_dks_and_dhm_at_defaults_differ_in_structure_and_in_loss():
    from segkd.distill.hooks import FeatureTaps
    from segkd.distill.replicas import StageBranch
    from segkd.distill.side_branches import SynergyBranch
    from segkd.models.fusion import fusion

    torch.manual_seed(0)
    net = fusion(backbone="resnet18", width=8)
    x, mask = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    losses, built = {}, {}
    for name in ("dhm", "dks"):
        torch.manual_seed(1)
        method = build_method({"name": name})
        method.bind(net, None)
        with FeatureTaps(net, method.student_taps) as taps:
            student = {**net(x), **taps.pop()}
        method.setup({k: v.shape for k, v in student.items()}, None)
        losses[name], built[name] = method(student, None, {"mask": mask}), method
    assert all(isinstance(b, StageBranch) for b in built["dhm"].branches)  # copies of layer3/layer4 + decoder
    assert all(isinstance(b, SynergyBranch) for b in built["dks"].branches)  # fresh blocks + a head
    shapes = {name: sorted(tuple(p.shape) for p in m.parameters()) for name, m in built.items()}
    assert shapes["dhm"] != shapes["dks"]
    assert built["dhm"].param_groups()["backbone"] and not built["dks"].param_groups()["backbone"]
    assert losses["dhm"]["aux_sup"].item() != pytest.approx(losses["dks"]["aux_sup"].item(), rel=1e-3)
    assert losses["dhm"]["mimic"].item() != pytest.approx(losses["dks"]["synergy"].item(), rel=1e-3)


# ----------------------------------------------------------------------------- PSPSD reuses PSPNet's pyramid
def test_pspsd_pyramid_is_pspnets_pyramid_pooling_between_a_reduction_and_a_merge():
    from pathlib import Path

    import segkd.distill as distill
    from segkd.distill import pspsd, pyramids
    from segkd.models.pspnet import PyramidPooling

    method = build_method({"name": "pspsd", "width": 8})
    shapes = {f"stage{i}": torch.Size([2, 4 * i, 32 >> i, 32 >> i]) for i in range(1, 5)}
    shapes.update({f"fused{i}": torch.Size([2, 8, 32 >> i, 32 >> i]) for i in range(1, 5)})
    method.setup(shapes, None)
    for branch in method.branches.pyramids:
        assert isinstance(branch[1], PyramidPooling)  # the PSPNet module itself, not a look-alike
        assert [m.kernel_size for m in (branch[0][0], branch[2][0])] == [(1, 1), (3, 3)]
    assert not hasattr(pspsd, "conv_bn_relu") and not hasattr(pspsd, "PyramidPooling")
    assert pyramids.reduced_pyramid_pooling.__name__ != PyramidPooling.__name__
    too_long = {p.name: n for p in Path(distill.__file__).parent.glob("*.py")
                if (n := len(p.read_text().splitlines())) >= 150}
    assert not too_long  # one concern per file: helpers go to a module beside it


# ----------------------------------------------------------------------------- KD and the ignore label
def test_logits_kd_masks_the_ignore_label_or_averages_over_all_pixels_as_the_references():
    import torch.nn.functional as F

    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    mask = torch.randint(0, 4, (2, 3, 5))
    mask[0, 0] = 255
    per_pixel = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)
    masked = build_method({"name": "logits_kd"})({"logits": s}, {"logits": t}, {"mask": mask})["kd"]
    assert masked.item() == pytest.approx(per_pixel[mask != 255].mean().item(), rel=1e-5)
    every = build_method({"name": "logits_kd", "mask_ignore": False})({"logits": s}, {"logits": t}, {"mask": mask})
    # the CIRKD benchmark's CriterionKD: KL(batchmean) over the B·h·w pixel rows, ignore label included
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 4)  # noqa: E731
    reference = F.kl_div(F.log_softmax(rows(s), 1), F.softmax(rows(t), 1), reduction="batchmean")
    assert every["kd"].item() == pytest.approx(reference.item(), rel=1e-5)
    assert every["kd"].item() != pytest.approx(masked.item(), rel=1e-3)


# ----------------------------------------------------------------------------- segkd methods
def test_segkd_methods_names_each_methods_terms_reference_and_recipe_parts(capsys):
    from segkd.cli import main
    from segkd.distill import METHODS
    from segkd.distill.references import REFERENCES

    assert set(REFERENCES) == set(METHODS.names())  # every method says which code its defaults follow
    assert main(["methods"]) == 0
    out = "\n" + capsys.readouterr().out
    for name in METHODS.names():
        block = out[out.index(f"\n{name}  [") + 1:].splitlines()[1:8]
        assert f"    reference: {REFERENCES[name]}" in block, name
        assert any(line.startswith("    terms:") for line in block), name
    for recipe, parts in (("skd_full", ("skd", "logits_kd")), ("ifvd_full", ("ifvd", "logits_kd", "skd"))):
        includes = next(line for line in out[out.index(f"\n{recipe}  ["):].splitlines() if "includes:" in line)
        assert all(part in includes for part in parts)
