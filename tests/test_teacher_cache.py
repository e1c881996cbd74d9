"""Teacher cache (offline distillation): filled once, keyed, moved with the augmentation, refused when stale."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from segkd.data import build_dataset
from segkd.distill import FeatureTaps
from segkd.engine import builders, teacher_cache
from segkd.engine.distiller import Distiller
from segkd.engine.distributed import DistEnv
from segkd.engine.teacher import LiveTeacher
from segkd.engine.teacher_cache import CachedTeacher, CacheReader, TeacherCacheError, open_cache
from segkd.engine.trainer import fit, training_losses
from segkd.models import build_model

from engine_helpers import tiny_semantic_config

CPU = torch.device("cpu")
TEACHER = {"name": "pspnet", "backbone": "resnet18", "output_stride": 8, "head_channels": 32}
# no augmentation: scale 1, no rotation, blur or flip, the crop the whole 33 px image (8k + 1: the
# teacher's logits grid falls exactly on image pixels with align_corners)
PLAIN = {"synthetic": {"image_size": 33}, "crop_size": 33, "scale_range": [1.0, 1.0], "rotate": [0.0, 0.0],
         "blur": False, "flip": False}


def _teacher_file(path, seed=0):
    torch.manual_seed(seed)
    model = build_model("pspnet", num_classes=3, **{k: v for k, v in TEACHER.items() if k != "name"})
    torch.save(model.state_dict(), path)
    return path


def _cfg(tmp_path, methods=None, data=None, checkpoint=None, cache=None, **extra):
    checkpoint = checkpoint or tmp_path / "teacher.pth"
    if not checkpoint.exists():
        _teacher_file(checkpoint)
    return tiny_semantic_config(tmp_path, data=data or {}, distill={
        "teacher": {"model": TEACHER, "checkpoint": str(checkpoint), "cache": str(cache or tmp_path / "cache")},
        "methods": methods or [{"name": "logits_kd", "at": "out"}]}, **extra)


def _prepared(cfg):
    """Student, methods, teacher, teacher taps and the plain training set of ``cfg``."""
    torch.manual_seed(0)
    student = builders.build_student(cfg)
    methods = builders.build_methods(cfg)
    teacher = builders.build_teacher(cfg.distill.teacher, cfg, CPU)
    train_set = build_dataset(cfg.data, cfg.task, "train")
    example = torch.stack([train_set[i]["image"] for i in range(2)])
    _, teacher_taps = builders.prepare_methods(methods, student, teacher, example)
    return student, methods, teacher, teacher_taps, train_set


def _open(cfg, teacher, maps, train_set):
    return open_cache(cfg, teacher, maps, DistEnv(), CPU, [s.name for s in train_set.samples])


def test_the_cache_is_filled_once_and_reused(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, train={"max_iters": 1})
    fit(cfg)
    folder = tmp_path / "cache"
    files = sorted((folder / "maps").glob("*.npy"))
    assert (folder / "manifest.json").is_file() and len(files) == 8  # one map per training image
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_fill(*args, **kwargs):
        raise AssertionError("the teacher ran over the training set again")

    monkeypatch.setattr(teacher_cache, "fill", no_fill)
    again = _cfg(tmp_path / "second", train={"max_iters": 1}, checkpoint=tmp_path / "teacher.pth", cache=folder)
    report = fit(again)
    assert report["iterations"] == 1
    assert [f.stat().st_mtime_ns for f in files] == stamps


@pytest.mark.parametrize("at", ["out", "logits"])
def test_without_augmentation_the_cached_kd_loss_equals_the_live_one(tmp_path, at):
    cfg = _cfg(tmp_path, methods=[{"name": "logits_kd", "at": at, "temperature": 2.0}], data=PLAIN)
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    needed = teacher_cache.needed_maps(methods, teacher, teacher_taps)
    manifest = _open(cfg, teacher, set(needed.values()), train_set)
    train_set.extra_maps = CacheReader(cfg.distill.teacher.cache, manifest["maps"], manifest["align_corners"])
    batch = default_collate([train_set[i] for i in range(3)])
    student.eval()
    cached = CachedTeacher(teacher, needed, batch["image"], manifest["align_corners"])
    with LiveTeacher(teacher, teacher_taps) as live:
        live_out, cached_out = live(batch)[at], cached(batch)[at]
    assert cached_out.shape == live_out.shape
    assert torch.allclose(cached_out, live_out, rtol=1e-3, atol=1e-3)  # fp16 storage
    with Distiller(student, teacher, methods, example=batch["image"]) as distiller:
        live_loss = training_losses(cfg, student, distiller, batch, CPU)["logits_kd/kd"]
        distiller.teacher_source = cached
        cached_loss = training_losses(cfg, student, distiller, batch, CPU)["logits_kd/kd"]
    assert cached_loss.item() == pytest.approx(live_loss.item(), rel=1e-3, abs=1e-5)


def test_the_cached_map_moves_with_the_image(tmp_path):
    # the image itself as the "teacher map": after the training transform the carried map must
    # equal the transformed image (before normalisation). With mean 0 the image's padding and
    # rotation fill is 0 as the map's, so they must agree everywhere, borders included.
    for extra, exact in (({"scale_range": [1.0, 1.0], "rotate": [0.0, 0.0]}, True),  # flip + crop: exact
                         ({"scale_range": [0.7, 1.4], "rotate": [-10.0, 10.0]}, False)):
        data = {"crop_size": 24, "blur": False, "flip": True, "mean": [0.0, 0.0, 0.0], "std": [2.0, 2.0, 2.0],
                **extra}
        cfg = tiny_semantic_config(tmp_path, data=data)
        raw = build_dataset(cfg.data, cfg.task, "train", augment=False)
        plain_image = {i: raw[i]["image"] * 2.0 for i in range(len(raw))}  # undo the normalisation
        train_set = build_dataset(cfg.data, cfg.task, "train",
                                  extra_maps=lambda i, size, plain=plain_image: {"teacher/out": plain[i]})
        flipped = 0
        for seed in range(8):
            torch.manual_seed(seed)
            sample = train_set[seed % len(train_set)]
            image, carried = sample["image"] * 2.0, sample["teacher/out"]
            assert carried.shape == image.shape == (3, 24, 24)
            if exact:
                assert torch.equal(carried, image)
                full = plain_image[seed % len(train_set)]
                flipped += not any(torch.equal(carried, full[:, top:top + 24, left:left + 24])
                                   for top in range(9) for left in range(9))
            else:
                assert torch.allclose(carried, image, atol=1e-3)
        if exact:
            assert 0 < flipped < 8  # both flipped and unflipped samples were checked


def test_a_changed_teacher_list_or_normalisation_is_refused_and_a_map_added(tmp_path):
    cfg = _cfg(tmp_path)
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    _open(cfg, teacher, {"out"}, train_set)

    other_teacher = _cfg(tmp_path, checkpoint=_teacher_file(tmp_path / "other.pth", seed=1))
    with pytest.raises(TeacherCacheError, match="another teacher checkpoint; delete the folder"):
        _open(other_teacher, teacher, {"out"}, train_set)
    shorter = build_dataset(cfg.data, cfg.task, "train")
    shorter.samples = shorter.samples[:-1]
    with pytest.raises(TeacherCacheError, match="another training list"):
        _open(cfg, teacher, {"out"}, shorter)
    renormalised = _cfg(tmp_path, data={"mean": [1.0, 2.0, 3.0]})
    with pytest.raises(TeacherCacheError, match=r"another normalisation \(data.mean / data.std\)") as err:
        _open(renormalised, teacher, {"out"}, train_set)
    assert "\n" not in str(err.value)
    maps = tmp_path / "cache" / "maps"
    out_files = {path: path.stat().st_mtime_ns for path in maps.glob("*.out.npy")}
    manifest = _open(cfg, teacher, {"logits"}, train_set)  # the same key: the map is added beside
    assert manifest["maps"] == ["logits", "out"] and len(list(maps.glob("*.logits.npy"))) == len(out_files)
    assert {path: path.stat().st_mtime_ns for path in maps.glob("*.out.npy")} == out_files  # kept as they were


def test_a_teacher_kept_as_weights_only_still_serves_its_cache(tmp_path):
    """A comparison rewrites a finished teacher's last.pt without its optimizer state: the cache, keyed
    by the weights, still serves it; a teacher whose weights differ by one value is refused."""
    from segkd.engine.checkpoint import CHECKPOINT_FORMAT, keep_weights_only

    torch.manual_seed(0)
    state = build_model("pspnet", num_classes=3, **{k: v for k, v in TEACHER.items() if k != "name"}).state_dict()
    full = {"format": CHECKPOINT_FORMAT, "config": {}, "model": state, "iteration": 3,
            "optimizer": {"state": {0: {"momentum_buffer": torch.ones(4)}}, "param_groups": []}, "rng": {}}
    torch.save(full, tmp_path / "last.pt")
    cfg = _cfg(tmp_path, checkpoint=tmp_path / "last.pt")
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    _open(cfg, teacher, {"out"}, train_set)
    assert keep_weights_only(tmp_path / "last.pt")
    _open(cfg, teacher, {"out"}, train_set)  # served: no TeacherCacheError
    state["classifier.1.weight"].view(-1)[0] += 1.0
    torch.save({**full, "model": state}, tmp_path / "last.pt")
    with pytest.raises(TeacherCacheError, match="another teacher checkpoint"):
        _open(cfg, teacher, {"out"}, train_set)


def test_an_interrupted_fill_is_not_used(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    real_save, calls = np.save, {"n": 0}

    def dies_at_the_third_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(teacher_cache.np, "save", dies_at_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        _open(cfg, teacher, {"out"}, train_set)
    monkeypatch.undo()
    folder = tmp_path / "cache"
    assert len(list((folder / "maps").glob("*.npy"))) == 2 and not (folder / "manifest.json").exists()
    assert teacher_cache.read_manifest(folder) is None  # never read as complete
    fills = []
    real_fill = teacher_cache.fill
    monkeypatch.setattr(teacher_cache, "fill", lambda *a, **k: fills.append(1) or real_fill(*a, **k))
    manifest = _open(cfg, teacher, {"out"}, train_set)
    assert fills == [1] and manifest["training_list"]["count"] == 8
    assert len(list((folder / "maps").glob("*.npy"))) == 8


def test_a_method_needing_features_refuses_the_cache_naming_the_tap(tmp_path):
    cfg = _cfg(tmp_path, methods=[{"name": "logits_kd", "at": "logits"}, {"name": "cwd", "at": "head"}])
    with pytest.raises(TeacherCacheError, match=r"method 'cwd' taps the teacher at 'head' \(tap 'cwd_input'\)"):
        fit(cfg)
    assert not (tmp_path / "cache").exists()  # refused before anything was filled


def test_a_killed_cached_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from segkd.engine import trainer as trainer_module
    from segkd.engine.checkpoint import read_checkpoint

    def run_cfg(name):
        return _cfg(tmp_path / name, checkpoint=tmp_path / "teacher.pth", cache=tmp_path / "cache",
                    train={"epochs": 2, "checkpoint_every_iters": 1})

    _teacher_file(tmp_path / "teacher.pth")
    straight, killed = run_cfg("a"), run_cfg("b")
    fit(straight)
    real, calls = trainer_module.training_losses, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # iterations 1-3 done and checkpointed, mid-epoch 1
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "training_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        fit(killed)
    monkeypatch.undo()
    fit(killed, resume=True)
    a, b = (read_checkpoint(c.run_dir / "last.pt")["model"] for c in (straight, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_segkd_cache_teacher_fills_ahead_and_training_reuses_it(tmp_path, monkeypatch, capsys):
    from segkd.cli import main
    from segkd.config import save_config

    cfg = _cfg(tmp_path, methods=[{"name": "logits_kd"}], train={"max_iters": 1})
    save_config(cfg, tmp_path / "kd.yaml")
    assert main(["cache-teacher", str(tmp_path / "kd.yaml")]) == 0
    assert "the teacher's ['logits'] for 8 training images, ready" in capsys.readouterr().out
    monkeypatch.setattr(teacher_cache, "fill", lambda *a, **k: pytest.fail("filled twice"))
    assert main(["cache-teacher", str(tmp_path / "kd.yaml")]) == 0  # a full cache is only checked
    assert fit(cfg)["iterations"] == 1
    assert main(["cache-teacher", str(tmp_path / "kd.yaml"), "--set", "distill.teacher.cache=null"]) == 1
    assert "distill.teacher.cache: not set" in capsys.readouterr().err


def test_a_multi_view_cache_holds_the_mean_of_the_teachers_logits_over_scales_and_mirrors(tmp_path):
    cfg = _cfg(tmp_path, data=PLAIN,
               methods=[{"name": "logits_kd", "at": "logits"}, {"name": "logits_kd", "at": "out"}])
    cfg.distill.teacher.cache_scales, cfg.distill.teacher.cache_flip = [0.5, 1.0], True
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    manifest = _open(cfg, teacher, {"logits", "out"}, train_set)
    assert manifest["views"] == {"scales": [0.5, 1.0], "flip": True}
    resize = functools.partial(torch.nn.functional.interpolate, mode="bilinear", align_corners=teacher.align_corners)
    image = build_dataset(cfg.data, cfg.task, "train", augment=False)[3]["image"][None]
    half = resize(image, size=(16, 16))  # 33 px at scale 0.5, rounded
    sizes = {"out": (33, 33), "logits": (5, 5)}  # the image's; the logits' at the largest scale (1)
    expected = {name: torch.zeros(1, 3, *size) for name, size in sizes.items()}
    with FeatureTaps(teacher, {"logits": "logits"}) as hooks, torch.inference_mode():
        for view in (image, half):
            for mirrored in (False, True):
                outputs = {**teacher(view.flip(-1) if mirrored else view), **hooks.pop()}
                for name, size in sizes.items():
                    value = outputs[name].flip(-1) if mirrored else outputs[name]
                    expected[name] += resize(value, size=size) / 4
    for name in sizes:
        stored = torch.from_numpy(np.load(tmp_path / "cache" / "maps" / f"000003.{name}.npy")).float()
        assert torch.allclose(stored, expected[name][0], atol=2e-3)  # fp16 storage
    plain = _cfg(tmp_path / "plain", data=PLAIN, checkpoint=tmp_path / "teacher.pth")
    _open(plain, teacher, {"out"}, train_set)
    single = torch.from_numpy(np.load(tmp_path / "plain" / "cache" / "maps" / "000003.out.npy")).float()
    assert not torch.allclose(single, expected["out"][0], atol=2e-3)  # the views changed the map


def test_a_cache_of_other_views_is_refused(tmp_path):
    cfg = _cfg(tmp_path, data=PLAIN)
    student, methods, teacher, teacher_taps, train_set = _prepared(cfg)
    _open(cfg, teacher, {"out"}, train_set)
    cfg.distill.teacher.cache_scales = [0.75, 1.0]
    with pytest.raises(TeacherCacheError, match=r"other views \(distill.teacher.cache_scales / cache_flip\)"):
        _open(cfg, teacher, {"out"}, train_set)
