"""`segkd demo`: what it compares, and that the comparison is fair."""
from __future__ import annotations

from pathlib import Path

import pytest

from segkd.commands.compare import run_configs
from segkd.commands.demo import demo_config
from segkd.config import ConfigError


def _configs(cc):
    configs = run_configs(cc)
    return {e.name: configs[(e.name, cc.seeds_of(e)[0])] for e in cc.entries}


def test_demo_compares_three_seeds_with_the_same_student_data(tmp_path):
    cc = demo_config(None, tmp_path)
    assert cc.seeds == [1, 2, 3] and cc.baseline == "student"
    runs = _configs(cc)
    student, distilled, teacher = runs["student"], runs["student+kd+cwd"], runs["teacher"]
    # the two students differ only in the distillation: same data, labels, model, optimiser, schedule
    assert student.data == distilled.data and student.model == distilled.model
    assert (student.optim, student.schedule, student.train.epochs) == (
        distilled.optim, distilled.schedule, distilled.train.epochs)
    assert student.data.synthetic.label_noise > 0  # annotations that confuse classes
    assert distilled.distill.methods == [{"name": "logits_kd", "temperature": 1.0, "at": "logits"}, {"name": "cwd"}]
    assert distilled.loss.distill_share == 0.5
    # the recipe's only other change: the teacher's logits read from the cache rather than recomputed
    assert distilled.distill.teacher.cache == cc.output_dir / "teacher_cache" / "teacher"
    # the teacher learned from a larger set, carefully annotated, that holds the students' images
    # (image i depends on the generator's seed and the image size only, not on the set's length)
    t, s = teacher.data.synthetic, student.data.synthetic
    assert t.num_train > s.num_train and (t.seed, t.image_size, t.num_classes) == (s.seed, s.image_size, s.num_classes)
    assert t.label_noise == 0 < s.label_noise
    assert teacher.data.root != student.data.root
    # the teacher is the larger network
    assert teacher.model.backbone == "resnet18" and student.model.backbone == "resnet10t"


def test_the_binary_demo_pits_self_distillation_against_the_network_alone_at_equal_epochs_and_compute(tmp_path):
    cc = demo_config(None, tmp_path, task="binary")
    assert cc.seeds == [1, 2, 3] and cc.baseline == "baseline"
    runs = _configs(cc)
    alone, distilled = runs["baseline"], runs["tfkd_self"]
    assert alone.task == "binary" and alone.data == distilled.data and alone.model == distilled.model
    assert (alone.optim, alone.schedule, alone.train.epochs) == (distilled.optim, distilled.schedule,
                                                                 distilled.train.epochs)
    assert alone.data.synthetic.label_noise > 0  # masks that miss objects; the test masks are clean
    assert distilled.distill.methods == [{"name": "tfkd", "mode": "self"}]
    assert distilled.distill.teacher.checkpoint == alone.run_dir / "last.pt"  # its own trained copy, seed 1
    # the network alone gets what Tf-KD costs: its training and its teacher's
    assert cc.entry("baseline_matched").matched_time.model_dump(by_alias=True) == {
        "of": "tfkd_self", "from": "baseline", "with_teacher": True}


def test_a_demo_task_that_is_not_the_datas_stops_with_one_line(tmp_path, shared_data):
    with pytest.raises(ConfigError, match=r"voc_samples: a semantic set \(its layout: voc\), not binary; "
                                          "drop --task or give --task semantic"):
        demo_config(str(shared_data / "voc_samples"), tmp_path, task="binary")


def test_the_binary_demo_on_a_users_set_reads_only_their_data(tmp_path, shared_data):
    sod300 = shared_data / "sod300"
    cc = demo_config(str(sod300), tmp_path)
    assert [e.name for e in cc.entries] == ["baseline", "tfkd_self", "baseline_matched"]
    for cfg in _configs(cc).values():
        assert cfg.data.layout == "binary" and Path(cfg.data.root) == sod300 and cfg.data.test_size == 128
        assert cfg.data.synthetic.label_noise == 0  # the generated set's missed objects stay with it


def test_demo_on_a_users_data_trains_every_entry_on_it(tmp_path, shared_data):
    voc_samples = shared_data / "voc_samples"
    cc = demo_config(str(voc_samples), tmp_path)
    for cfg in _configs(cc).values():
        assert cfg.data.layout == "voc" and Path(cfg.data.root) == voc_samples


def test_a_shrunken_demo_runs_end_to_end(tmp_path, monkeypatch):
    from segkd.commands.compare import compare

    monkeypatch.chdir(tmp_path)  # the demo's generated sets go under data/
    cc = demo_config(None, tmp_path / "demo", ["seeds=[1,2]"])
    tiny = ["data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.image_size=32",
            "data.crop_size=32", "data.base_size=32", "train.epochs=1", "train.val_every=1", "data.batch_size=4"]
    for entry in cc.entries:  # after the entry's own settings, so the teacher's larger set shrinks too
        entry.set = [*entry.set, *tiny, f"data.root=data/tiny-{entry.role}"]
    cc.qualitative_images = 2
    result = compare(cc, log=lambda line: None)
    names = [row["method"] for row in result["rows"]]
    assert names == [e.name for e in cc.entries]
    assert all(row["seeds"] == 2 for row in result["rows"] if row["role"] == "student")
    assert "significant" in result["markdown"] and "train (min)" in result["markdown"]
    for name in ("results.md", "results.csv", "results.json"):
        assert (cc.output_dir / name).is_file()
    assert {"qualitative.png", "training_curves.png"} <= {Path(f).name for f in result["figures"]}


def test_a_shrunken_binary_demo_runs_end_to_end(tmp_path, monkeypatch):
    from segkd.commands.compare import compare

    monkeypatch.chdir(tmp_path)
    tiny = ["data.root=data/tiny-binary", "data.synthetic={num_train: 8, num_val: 4, image_size: 32, seed: 0, "
            "label_noise: 0.4}", "data.train_size=32", "data.multiscale_sizes=[32]", "data.test_size=32",
            "train.epochs=1", "train.val_every=1", "data.batch_size=4"]
    cc = demo_config(None, tmp_path / "demo", ["seeds=[1,2]", f"set={tiny}"], task="binary")
    cc.qualitative_images = 2
    result = compare(cc, log=lambda line: None)
    assert [row["method"] for row in result["rows"]] == ["baseline", "tfkd_self", "baseline_matched"]
    assert all(row["seeds"] == 2 for row in result["rows"])
    assert "baseline_matched: baseline alone at the training wall-clock of tfkd_self and its teacher baseline" \
        in result["markdown"]


def test_the_expected_time_follows_compares_schedule(tmp_path, monkeypatch):
    from segkd.commands import demo

    monkeypatch.setattr(demo, "MEASURED_SECONDS", {"semantic": {"teacher": 100.0, "run": 40.0, "report": 5.0},
                                                   "binary": {"run": 40.0, "matched": 75.0, "report": 5.0}})
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    cc = demo_config(None, tmp_path, ["jobs=1"])
    assert demo.expected_seconds(cc) == 100 + 6 * 40 + 5  # one after another
    cc = demo_config(None, tmp_path, ["jobs=2"])
    # the students alone run beside the teacher (40, 80, 120 s); the distilled ones wait for it:
    # 100-140 and 120-160, then 140-180
    assert demo.expected_seconds(cc) == 180 + 5
    cc = demo_config(None, tmp_path, task="binary")
    # baseline 0-40, 0-40, 40-80; Tf-KD waits for its teacher (the baseline): 80-120, 80-120,
    # 120-160; the matched runs wait for both: 160-235, 160-235, 235-310
    assert demo.expected_seconds(cc, "binary") == 310 + 5


def test_a_demo_folder_of_an_older_demo_is_set_aside_not_a_stop(tmp_path, monkeypatch):
    # segkd demo always asks compare to move runs of another config aside (kept, renamed) and retrain
    from segkd.cli import main
    from segkd.commands import compare as compare_module

    asked = {}

    def fake_compare(cc, **kwargs):
        asked.update(kwargs)
        return {"markdown": "", "figures": []}

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    assert main(["demo", "--output", str(tmp_path)]) == 0
    assert asked.get("retrain") is True


def test_demo_task_binary_runs_the_self_distillation_demo(tmp_path, monkeypatch, capsys):
    from segkd.cli import main
    from segkd.commands import compare as compare_module

    ran = []
    monkeypatch.setattr(compare_module, "compare",
                        lambda cc, **kwargs: ran.append(cc) or {"markdown": "", "figures": []})
    assert main(["demo", "--task", "binary", "--output", str(tmp_path)]) == 0
    assert [e.name for e in ran[0].entries] == ["baseline", "tfkd_self", "baseline_matched"]
    assert ran[0].output_dir == tmp_path / "binary"
    assert "segkd demo: baseline, tfkd_self, baseline_matched (9 runs, 2 at a time)" in capsys.readouterr().out
