"""Why "CE + KD" hurt a pretrained student, and what the recommended recipe does about it.

- With a teacher that agrees with the labels, ``CE + KD`` is twice the cross-entropy gradient: the
  same as doubling the learning rate. Weights that sum to one keep the gradient of CE alone.
- The teacher sees exactly the student's input: distilling from an exact copy adds nothing.
- Distilling a trained student from a copy of itself does not make it worse.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from segkd.data import build_dataset
from segkd.distill import build_method
from segkd.engine import builders
from segkd.engine.distiller import Distiller
from segkd.engine.evaluate import evaluate_with_config
from segkd.engine.schedule import lr_factor
from segkd.engine.trainer import training_losses
from segkd.models.losses import semantic_ce

from engine_helpers import tiny_semantic_config


def _kd(**options):
    return build_method({"name": "logits_kd", "temperature": 1.0, "at": "out", **options})


def test_ce_plus_kd_doubles_the_gradient_and_a_convex_mix_keeps_it():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6, 7))
    one_hot_teacher = 50.0 * F.one_hot(labels, 5).permute(0, 3, 1, 2).float()  # softmax = labels
    kd = _kd()

    def gradient(ce_weight: float, kd_weight: float) -> torch.Tensor:
        logits.grad = None
        kd_term = kd({"out": logits}, {"out": one_hot_teacher}, {"mask": labels})["kd"]
        (ce_weight * semantic_ce(logits, labels) + kd_weight * kd_term).backward()
        return logits.grad.clone()

    ce_only = gradient(1.0, 0.0)
    assert torch.allclose(gradient(1.0, 1.0), 2 * ce_only, atol=1e-7)
    for alpha in (0.3, 0.5, 0.9):
        assert torch.allclose(gradient(1 - alpha, alpha), ce_only, atol=1e-7)


def test_warmup_ramps_the_learning_rate_then_follows_the_schedule():
    assert lr_factor("poly", 0, 100, 10, warmup=0.1) == pytest.approx(0.1 * (1 - 0 / 100) ** 0.9)
    assert lr_factor("poly", 4, 100, 10, warmup=0.1) == pytest.approx(0.5 * (1 - 4 / 100) ** 0.9)
    assert lr_factor("poly", 20, 100, 10, warmup=0.1) == pytest.approx((1 - 20 / 100) ** 0.9)
    assert lr_factor("poly", 0, 100, 10) == 1.0


def _setup(tmp_path):
    teacher = {"model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
               "checkpoint": str(tmp_path / "unused.pt")}  # the tests pass the teacher model directly
    cfg = tiny_semantic_config(tmp_path, distill={"teacher": teacher,
                                                  "methods": [{"name": "logits_kd", "temperature": 1.0, "at": "out"}]})

    torch.manual_seed(0)
    student = builders.build_student(cfg)
    methods = builders.build_methods(cfg)
    train_set = build_dataset(cfg.data, cfg.task, "train")
    return cfg, student, methods, train_set


def test_an_exact_copy_as_teacher_gives_a_zero_distillation_term(tmp_path):
    cfg, student, methods, train_set = _setup(tmp_path)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    student.eval()  # same mode as the frozen teacher: any difference would come from the inputs
    batch = {"image": torch.stack([train_set[i]["image"] for i in range(2)]),
             "mask": torch.stack([train_set[i]["mask"] for i in range(2)])}
    losses = training_losses(cfg, student, Distiller(student, teacher, methods, example=batch["image"]),
                             batch, torch.device("cpu"))
    assert losses["logits_kd/kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["task"].item() > 0.1


def test_distilling_a_trained_student_from_its_own_copy_does_not_make_it_worse(tmp_path):
    cfg, student, methods, train_set = _setup(tmp_path)
    loader = torch.utils.data.DataLoader(train_set, batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))

    def train(model, steps, teacher=None, alpha=0.0):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        example = torch.zeros(2, 3, cfg.data.crop_size, cfg.data.crop_size)  # shapes only
        distiller = Distiller(model, teacher, methods if teacher is not None else [], example=example)
        done = 0
        while done < steps:
            for batch in loader:
                model.train()
                losses = training_losses(cfg, model, distiller, batch, torch.device("cpu"))
                total = (1 - alpha) * (losses["task"] + losses.get("task_aux", 0)) + alpha * losses.get(
                    "logits_kd/kd", 0)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                done += 1
        return model

    val_set = build_dataset(cfg.data, cfg.task, "val")
    trained = train(student, 40)
    teacher = copy.deepcopy(trained).eval().requires_grad_(False)
    torch.manual_seed(1)
    alone = train(copy.deepcopy(trained), 20)
    torch.manual_seed(1)
    distilled = train(copy.deepcopy(trained), 20, teacher=teacher, alpha=0.5)
    device = torch.device("cpu")
    before = evaluate_with_config(teacher, val_set, cfg, device)["mIoU"]
    after_alone = evaluate_with_config(alone, val_set, cfg, device)["mIoU"]
    after_kd = evaluate_with_config(distilled, val_set, cfg, device)["mIoU"]
    print("self-copy KD", before, after_alone, after_kd)
    assert after_kd >= min(before, after_alone) - 0.02, (before, after_alone, after_kd)


def test_distill_share_scales_task_terms_by_one_minus_alpha_and_methods_by_alpha(tmp_path):
    cfg, student, methods, train_set = _setup(tmp_path)
    torch.manual_seed(5)
    teacher = builders.build_student(cfg).eval().requires_grad_(False)  # another network: KD > 0
    student.eval()
    batch = {"image": torch.stack([train_set[i]["image"] for i in range(2)]),
             "mask": torch.stack([train_set[i]["mask"] for i in range(2)])}
    distiller = Distiller(student, teacher, methods, example=batch["image"])

    def losses(share):
        run = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"distill_share": share})})
        return training_losses(run, student, distiller, batch, torch.device("cpu"))

    plain, mixed = losses(None), losses(0.25)
    assert plain["logits_kd/kd"].item() > 1e-6
    assert mixed["task"].item() == pytest.approx(0.75 * plain["task"].item(), rel=1e-5)
    assert mixed["logits_kd/kd"].item() == pytest.approx(0.25 * plain["logits_kd/kd"].item(), rel=1e-5)


def test_shipped_kd_configs_follow_the_recipe_and_the_source_recipe_is_kept():
    from segkd.config import load_config

    recipe, alone = load_config("kd_pspnet50_to_18_voc"), load_config("pspnet18_voc")
    assert recipe.distill.methods == [{"name": "logits_kd", "temperature": 1.0, "at": "logits"}, {"name": "cwd"}]
    assert recipe.loss.distill_share == 0.5 and recipe.schedule.warmup == alone.schedule.warmup > 0
    assert (recipe.optim, recipe.train.epochs, recipe.data) == (alone.optim, alone.train.epochs, alone.data)
    source = load_config("kd_pspnet50_to_18_voc_source_exact")
    assert source.loss.distill_share is None and source.loss.main_weight == 0.25
    assert source.schedule.warmup == 0.0 and source.distill.methods[0]["source_exact"] is True


def test_the_stanford_background_study_measures_the_recipe_against_a_tuned_student():
    from segkd.commands.compare import load_compare_config, run_configs
    from segkd.config import load_config

    cc = load_compare_config("compare_sbg")
    entries = {entry.name: entry for entry in cc.entries}
    recipe = load_config("kd_pspnet50_to_18_voc")
    configs = run_configs(cc)
    study = configs[("kd_cwd", 1)]
    assert (study.distill.methods, study.loss.distill_share) == (recipe.distill.methods, recipe.loss.distill_share)
    baseline = configs[(cc.baseline, 1)]
    assert not entries[cc.baseline].teacher_from and not baseline.distill.methods
    # the baseline and the recipe differ only in the distillation, and have the same seeds
    assert (baseline.data, baseline.model, baseline.train.epochs, baseline.schedule, baseline.optim) == (
        study.data, study.model, study.train.epochs, study.schedule, study.optim)
    assert entries[cc.baseline].seeds == entries["kd_cwd"].seeds and len(entries["kd_cwd"].seeds) >= 3


def test_the_held_out_search_gives_the_student_and_the_recipe_the_same_grid_and_seeds():
    from segkd.commands.compare import load_compare_config, run_configs

    cc = load_compare_config("search_sbg")
    configs = run_configs(cc)
    assert configs[(cc.entries[1].name, cc.seeds_of(cc.entries[1])[0])].data.val_split == "holdout"  # never val

    def grid(prefix: str, distilled: bool) -> dict[float, list[int]]:
        rows = [e for e in cc.entries if e.name.startswith(prefix) and bool(e.teacher_from) == distilled
                and len(e.seeds or cc.seeds) > 1]
        return {configs[(e.name, e.seeds[0])].optim.lr: e.seeds for e in rows}

    student, recipe = grid("student_wu", False), grid("kd_cwd", True)
    assert student == recipe and sorted(student) == [0.01, 0.02, 0.04]
    assert all(len(seeds) >= 3 for seeds in student.values())
