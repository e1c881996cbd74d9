"""segkd as a library: ``segkd.Distiller`` in a user's own loop, through the top-level names only.

- the public names, their help, and a light ``import segkd``;
- models as users have them: tensor, tuple, dict / OrderedDict and ``.logits`` outputs give the
  same terms; the teacher runs frozen, in eval mode, once per call;
- a run of ``segkd train`` and the same run written as a plain loop over ``segkd.Distiller``
  end with bit-identical weights and buffers; ``load_trained`` and ``evaluate`` give that run's
  own metrics;
- hooks and added feature points go on ``close()``; bf16 autocast; lazy preparation on the
  first forward pass; param groups (DHM's copied stages train with the backbone); progress;
  gradients averaged over two gloo processes;
- each bad use is one line naming what to do.
"""
from __future__ import annotations

import pydoc
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import segkd

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 32
CLASSES = 3
SEED = 3
# no random augmentation: the trainer's samples are then the data set's own, whatever their seed
PLAIN = {"crop_size": IMAGES, "base_size": IMAGES, "scale_range": (1.0, 1.0), "rotate": (0.0, 0.0),
         "blur": False, "flip": False}


def synthetic(root: Path, **extra) -> dict:
    return {"layout": "synthetic", "root": str(root), **PLAIN, **extra,
            "synthetic": {"num_train": 8, "num_val": 3, "image_size": IMAGES, "num_classes": CLASSES, "seed": 0}}


def pspnet(**options) -> nn.Module:
    return segkd.build_model("pspnet", backbone="resnet18", num_classes=CLASSES, output_stride=8, **options)


def hook_count(*models: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


class Plain(nn.Module):
    """A user's network whose output comes in the form ``form``, at half the input resolution."""

    def __init__(self, form: str, seed: int = 0, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Conv2d(width, CLASSES, 1)
        self.form = form

    def forward(self, x: torch.Tensor):
        logits = self.classifier(self.body(x))
        if self.form == "tensor":
            return logits
        if self.form == "tuple":
            return (logits, logits.detach() * 0)
        if self.form == "dict":
            return {"out": logits}
        if self.form == "ordered_dict":  # torchvision
            return OrderedDict(out=logits)
        return SimpleNamespace(logits=logits, loss=None)  # Hugging Face's SemanticSegmenterOutput


# ---------------------------------------------------------------- the front door


def test_the_public_names_their_help_and_a_light_import():
    assert segkd.__all__ == ["Distiller", "build_dataset", "build_method", "build_model", "evaluate",
                             "export_onnx", "load_trained"]
    assert all(callable(getattr(segkd, name)) for name in segkd.__all__)
    assert (ROOT / "segkd" / "py.typed").is_file()
    text = pydoc.render_doc(segkd.Distiller, renderer=pydoc.plaintext)
    assert "Distiller(student: 'nn.Module', teacher: 'nn.Module | None' = None, methods:" in text
    assert "Example:" in text and "terms = distiller(out, images, masks)" in text
    loaded = subprocess.run([sys.executable, "-c", "import sys, segkd; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"  # the names load on first use


@pytest.mark.parametrize("form", ["tuple", "dict", "ordered_dict", "logits_attribute"])
def test_every_output_form_gives_the_terms_of_a_tensor_output(form):
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, CLASSES, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    terms = {}
    for kind in ("tensor", form):
        student, teacher = Plain(kind, seed=0), Plain(kind if kind != "tuple" else "tensor", seed=1)
        with segkd.Distiller(student, teacher, ["logits_kd"], example=images) as distiller:
            terms[kind] = distiller(student(images), images, masks)["logits_kd/kd"]
    assert terms["tensor"].item() > 0
    assert torch.equal(terms[form], terms["tensor"])


def test_paired_methods_at_out_read_a_plain_models_output_without_a_tap():
    """CWD has no feature point to tap on a model of a user's own; ``at: out`` reads its output."""
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, CLASSES, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    student, teacher = Plain("tensor", seed=0), Plain("tensor", seed=1)
    with segkd.Distiller(student, teacher, [{"name": "cwd", "at": "out"}], example=images) as distiller:
        assert distiller.student_taps == {} and distiller.teacher_taps == {}
        s_out = student(images)
        term = distiller(s_out, images, masks)["cwd/cwd"]
    s_out, t_out = (F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)  # `out`: at input size
                    for x in (s_out, teacher(images)))
    s_rows, t_rows = s_out.flatten(2) / 4.0, t_out.flatten(2) / 4.0  # CWD's defaults: τ 4, weight 3
    expected = 3.0 * 16.0 * F.kl_div(F.log_softmax(s_rows, -1), F.log_softmax(t_rows, -1), log_target=True,
                                     reduction="none").sum(-1).mean()
    assert term.item() == pytest.approx(expected.item(), rel=1e-5)
    term.backward()
    assert any(p.grad is not None for p in student.parameters())


def test_the_teacher_runs_frozen_in_eval_mode_once_per_call():
    images, masks = torch.randn(2, 3, 16, 16), torch.randint(0, CLASSES, (2, 16, 16))
    student, teacher = Plain("dict"), Plain("tensor", seed=1)
    calls = []
    teacher.register_forward_pre_hook(lambda module, args: calls.append((module.training, torch.is_grad_enabled())))
    with segkd.Distiller(student, teacher, ["logits_kd"], example=images) as distiller:
        probe_calls = len(calls)
        teacher.train()  # as a LightningModule's .train() would
        for _ in range(3):
            distiller(student(images), images, masks)["logits_kd/kd"].backward()
    assert calls[probe_calls:] == [(False, False)] * 3
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


# ---------------------------------------------------------------- one code path with segkd train


METHODS = [{"name": "logits_kd"}, {"name": "cwd"}, {"name": "feature_kd", "at": "head"}]
TEACHER = {"name": "pspnet", "backbone": "resnet18", "output_stride": 8, "head_channels": 128}


@pytest.fixture(scope="module")
def config_run(tmp_path_factory):
    """``segkd train`` of a distillation run (2 epochs of 2 steps), its teacher a plain state dict."""
    from segkd.config import validate
    from segkd.engine.trainer import fit

    tmp = tmp_path_factory.mktemp("library")
    segkd.build_dataset("semantic", "train", **synthetic(tmp / "data"))  # generated before any seeding
    torch.manual_seed(100)
    torch.save(pspnet(head_channels=128).state_dict(), tmp / "teacher.pth")
    cfg = validate({
        "task": "semantic", "name": "library", "output_dir": str(tmp / "run"),
        "data": {**synthetic(tmp / "data"), "batch_size": 4, "num_workers": 0},
        "model": {"name": "pspnet", "backbone": "resnet18", "output_stride": 8},
        "distill": {"teacher": {"model": TEACHER, "checkpoint": str(tmp / "teacher.pth")}, "methods": METHODS},
        "train": {"epochs": 2, "seed": SEED, "progress": False, "device": "cpu"}, "eval": {"sliding": False},
    })
    report = fit(cfg)
    return SimpleNamespace(tmp=tmp, cfg=cfg, report=report)


def test_a_plain_loop_over_the_distiller_trains_the_weights_segkd_train_trains(config_run):
    tmp = config_run.tmp
    train_set = segkd.build_dataset("semantic", "train", **synthetic(tmp / "data"))
    # Read before seeding: the training transform draws (an identity here) from the global RNG,
    # which must stay the one that initialises the models and drives dropout, as in the trainer.
    samples = [train_set[i] for i in range(len(train_set))]
    torch.manual_seed(SEED)
    student = pspnet()
    teacher = segkd.build_model(**{**TEACHER, "num_classes": CLASSES})
    teacher.load_state_dict(torch.load(tmp / "teacher.pth"))
    example = next(iter(DataLoader(samples, batch_size=2)))["image"]
    distiller = segkd.Distiller(student, teacher, METHODS, example=example)
    methods = distiller.param_groups()
    lr, head_lr = 0.01, 0.01 * 10.0  # segkd's SGD defaults: the head (and methods' parts) at 10x
    optimizer = torch.optim.SGD([
        {"params": student.param_groups()["backbone"] + methods["backbone"], "lr": lr},
        {"params": student.param_groups()["head"] + methods["head"], "lr": head_lr},
    ], lr=lr, momentum=0.9, weight_decay=1e-4)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    steps, step = 4, 0
    student.train()
    for epoch in range(2):
        # the trainer's order of samples: one permutation per (seed, epoch)
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(SEED * 1000003 + epoch))
        loader = DataLoader(samples, batch_size=4, sampler=order.tolist(), generator=torch.Generator())
        for batch in loader:
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * (1 - step / steps) ** 0.9  # poly
            distiller.set_progress(step / steps)
            out = student(batch["image"])
            losses = {"task": F.cross_entropy(out["out"], batch["mask"], ignore_index=255),
                      "task_aux": 0.4 * F.cross_entropy(out["aux"], batch["mask"], ignore_index=255),
                      **distiller(out, batch["image"], batch["mask"])}
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            step += 1
    distiller.close()

    trained, cfg = segkd.load_trained(tmp / "run" / "last.pt", device="cpu")
    assert sorted(losses) == ["cwd/cwd", "feature_kd/feature_kd", "logits_kd/kd", "task", "task_aux"]
    assert sum(p.numel() for p in distiller.parameters()) > 0  # feature_kd's mapping: 128 vs 512 channels
    expected, got = trained.state_dict(), student.state_dict()
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f"{len(differing)} tensors differ, first {differing[:3]}"
    # the config-free evaluation of the loaded model is segkd train's own final one
    val_set = segkd.build_dataset("semantic", "val", **synthetic(tmp / "data"))
    metrics = segkd.evaluate(trained, val_set)
    assert metrics["mIoU"] == config_run.report["student"]["mIoU"]
    assert cfg.distill.methods == METHODS


# ---------------------------------------------------------------- hooks, precision, preparation, groups


def test_close_removes_every_hook_and_the_added_feature_points():
    student, teacher = pspnet(), Plain("tensor", seed=1)
    before = hook_count(student, teacher)
    student_points = dict(student.feature_points)
    images = torch.randn(2, 3, IMAGES, IMAGES)
    with segkd.Distiller(student, teacher, ["logits_kd", {"name": "cwd"}], example=images,
                         teacher_points={"logits": "classifier"}) as distiller:
        assert hook_count(student, teacher) > before
        assert teacher.feature_points == {"logits": "classifier"}
    assert hook_count(student, teacher) == before
    assert student.feature_points == student_points and not hasattr(teacher, "feature_points")
    with pytest.raises(RuntimeError, match="closed"):
        distiller(student(images), images)
    lazy = segkd.Distiller(pspnet(), None, [])  # never prepared: its first-call hook goes too
    lazy.close()
    assert hook_count(lazy.student) == 0


def test_terms_under_bf16_autocast_are_float32_finite_and_train_the_parts():
    images, masks = torch.randn(2, 3, IMAGES, IMAGES), torch.randint(0, CLASSES, (2, IMAGES, IMAGES))
    student, teacher = pspnet(), pspnet(head_channels=128).eval()
    distiller = segkd.Distiller(student, teacher, ["logits_kd", {"name": "feature_kd", "at": "head"}], example=images)
    with distiller, torch.autocast("cpu", dtype=torch.bfloat16):
        terms = distiller(student(images), images, masks)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in distiller.parameters())


def test_parts_are_built_on_the_first_forward_pass_without_an_example():
    images, masks = torch.randn(2, 3, IMAGES, IMAGES), torch.randint(0, CLASSES, (2, IMAGES, IMAGES))
    student, teacher = pspnet(), pspnet(head_channels=128)
    distiller = segkd.Distiller(student, teacher, [{"name": "feature_kd", "at": "head"}])
    assert not distiller.prepared and not list(distiller.methods.parameters())
    with distiller:
        out = student(images)  # prepares: probes both models, builds the 128 -> 512 mapping
        assert distiller.prepared and sum(p.numel() for p in distiller.parameters()) > 0
        terms = distiller(out, images, masks)
    assert terms["feature_kd/feature_kd"].item() > 0
    early = segkd.Distiller(pspnet(), pspnet(head_channels=128), [{"name": "feature_kd", "at": "head"}])
    torch.optim.SGD([*early.student.parameters(), *early.parameters()], lr=0.1)
    with pytest.raises(RuntimeError, match=r"before the methods' parts existed .*: pass example="):
        early.student(images)
    early.close()


def test_dhm_copies_of_stages_go_to_the_backbone_group_and_progress_reaches_the_methods():
    model = segkd.build_model("fusion", backbone="resnet18", width=8)
    images, masks = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    with segkd.Distiller(model, None, ["dhm", "sad"], example=images) as distiller:
        groups = distiller.param_groups()
        assert groups["backbone"] and groups["head"]
        assert {id(p) for p in groups["backbone"] + groups["head"]} == {id(p) for p in distiller.parameters()}
        sad = distiller.methods[1]  # its attention transfer starts late in training
        distiller.set_progress(0.0)
        assert not sad.active
        distiller.set_progress(1.0)
        terms = distiller(model(images), images, masks)
    assert sad.active and "sad/attention" in terms and "dhm/aux_sup" in terms
    with pytest.raises(ValueError, match=r"fraction must be within \[0, 1\], got 1.5"):
        distiller.set_progress(1.5)


def _ddp_worker(rank: int, out: str) -> None:
    import torch.distributed as dist

    from segkd.engine.distributed import leave_process_group

    torch.set_num_threads(1)
    # a rendezvous file in the test's own folder: no port another process may take meanwhile
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same parts on both ranks, different data
    student, teacher = Plain("dict"), Plain("tensor", seed=1, width=16)  # 16 vs 8 channels: a learned mapping
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(10 + rank))
    distiller = segkd.Distiller(student, teacher, [{"name": "feature_kd", "student_at": "body",
                                                    "teacher_at": "body"}], example=images)
    sum(distiller(student(images), images).values()).backward()
    local = [p.grad.clone() for p in distiller.parameters()]
    distiller.average_gradients()
    torch.save({"local": local, "averaged": [p.grad for p in distiller.parameters()]}, f"{out}/rank{rank}.pt")
    leave_process_group()  # not destroy_process_group alone: see its docstring


def test_method_gradients_are_averaged_over_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["local"] and not torch.equal(ranks[0]["local"][0], ranks[1]["local"][0])
    for i, averaged in enumerate(ranks[0]["averaged"]):
        assert torch.equal(averaged, ranks[1]["averaged"][i])
        assert torch.allclose(averaged, (ranks[0]["local"][i] + ranks[1]["local"][i]) / 2)


# ---------------------------------------------------------------- errors a person can act on


def _bad_uses():
    images, masks = torch.randn(2, 3, IMAGES, IMAGES), torch.randint(0, CLASSES, (2, IMAGES, IMAGES))

    def tap_not_in_model():
        segkd.Distiller(pspnet(), pspnet(), [{"name": "feature_kd", "student_at": "backbone.layer5",
                                              "teacher_at": "head"}], example=images)

    def other_class_count():
        segkd.Distiller(pspnet(), segkd.build_model("pspnet", backbone="resnet18", num_classes=5, output_stride=8),
                        ["logits_kd"], example=images)

    def batch_sizes_differ():
        student = pspnet()
        with segkd.Distiller(student, pspnet(), ["logits_kd"], example=images) as distiller:
            distiller(student(images), images, masks[:1])

    def targets_missing():
        model = segkd.build_model("fusion", backbone="resnet18", width=8)
        with segkd.Distiller(model, None, ["byot"], example=images) as distiller:
            distiller(model(images), images)

    return {
        "tap": (tap_not_in_model, ValueError,
                r"tap '\w+': PSPNet has no module 'backbone.layer5'.*Close module names: \['backbone.layer4'"),
        "classes": (other_class_count, ValueError, r"student \(2, 3, 32, 32\) vs teacher \(2, 5, 32, 32\)"),
        "no_teacher": (lambda: segkd.Distiller(pspnet(), None, ["logits_kd", "cwd"]), ValueError,
                       r"\['logits_kd', 'cwd'\] distil from a teacher but none was given: pass teacher="),
        "batch": (batch_sizes_differ, ValueError, "different batch sizes: 2 images, 1 targets"),
        "targets": (targets_missing, ValueError, r"reads the targets .*: call distiller\(output, images, targets\)"),
        "method": (lambda: segkd.Distiller(pspnet(), pspnet(), ["logit_kd"]), ValueError,
                   "unknown distillation method 'logit_kd'; available: .*logits_kd"),
        "option": (lambda: segkd.build_method("cwd", taux=2.0), ValueError,
                   r"method 'cwd' has no option\(s\) \['taux'\]; its options are"),
        "model": (lambda: segkd.Distiller("student.pt", None, []), TypeError, "student must be an nn.Module, got str"),
    }


@pytest.mark.parametrize("case", sorted(_bad_uses()))
def test_each_bad_use_is_one_line_saying_what_to_do(case):
    call, error, pattern = _bad_uses()[case]
    with pytest.raises(error, match=pattern) as caught:
        call()
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- examples and the README


def _example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _falls(values: list[float]) -> bool:
    return sum(values[-3:]) < sum(values[:3])


def test_example_torchvision_student_from_a_tensor_output_teacher(tmp_path):
    result = _example("distill_torchvision").main([
        "--root", str(tmp_path / "data"), "--image-size", "32", "--num-train", "16", "--num-val", "2",
        "--teacher-steps", "30", "--steps", "12"])
    history = result["history"]
    assert set(history[0]) == {"task", "logits_kd/kd", "cwd/cwd"}
    for term in ("logits_kd/kd", "cwd/cwd"):
        assert _falls([step[term] for step in history]), [step[term] for step in history]
    assert 0.0 <= result["student_mIoU"] <= 1.0


def test_example_self_distillation_of_a_binary_model(tmp_path):
    result = _example("self_distill_binary").main([
        "--root", str(tmp_path / "data"), "--image-size", "64", "--num-train", "8", "--num-val", "2",
        "--steps", "10"])
    assert _falls([step["byot/aux_sup"] for step in result["history"]])
    assert result["method_parameters"] > 0 and 0.0 <= result["MAE"] <= 1.0


def test_example_lightning_module_with_a_distiller_inside(tmp_path):
    pytest.importorskip("lightning", reason="the optional extra segkd[lightning] is not installed")
    result = _example("lightning_distill").main([
        "--root", str(tmp_path / "data"), "--image-size", "32", "--num-train", "8", "--num-val", "2",
        "--teacher-steps", "2", "--steps", "3", "--batch-size", "4"])
    logged = result["logged"]
    assert {"task", "logits_kd/kd", "cwd/cwd"} <= set(logged)
    assert all(value == value and abs(value) < 1e6 for value in logged.values())


def test_the_readme_snippet_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Distil inside your own training loop", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    train_set = segkd.build_dataset("semantic", "train", **synthetic(tmp_path / "data"))
    torch.manual_seed(0)
    student, teacher = pspnet(), pspnet(head_channels=128)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    scope = {"student": student, "teacher": teacher, "loader": DataLoader(train_set, batch_size=4)}
    exec(compile(snippet, "README.md", "exec"), scope)
    terms = scope["terms"]
    assert set(terms) == {"logits_kd/kd", "cwd/cwd"} and all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert hook_count(student, teacher) == 0


def test_export_onnx_takes_a_model_with_a_tensor_output(tmp_path):
    pytest.importorskip("onnxruntime")
    info = segkd.export_onnx(Plain("tensor").eval(), tmp_path / "plain.onnx", input_size=(32, 32))
    assert Path(info["path"]).is_file() and info["max_abs_diff"] < 1e-4

