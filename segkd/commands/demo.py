"""``segkd demo``: the comparison a user runs first, on synthetic data or on theirs."""
from __future__ import annotations

import os
from pathlib import Path

from segkd.commands.compare_config import CompareConfig, validate_compare
from segkd.commands.compare_runner import waits_for
from segkd.config import ConfigError, apply_overrides, find_config, read_yaml


def detect_layout(root: Path) -> tuple[str, str]:
    """(task, layout) of a data folder: the binary SOD layout or the VOC layout."""
    if not root.is_dir():
        raise ConfigError(f"--data {root}: no such folder")
    names = {p.name for p in root.iterdir()}
    if names & {"Image", "image"} and names & {"Mask", "mask"}:
        return "binary", "binary"
    if "JPEGImages" in names and ("SegmentationClass" in names or "SegmentationClassAug" in names):
        return "semantic", "voc"
    raise ConfigError(
        f"--data {root}: not a known layout; expected Image/ + Mask/ + train.txt/test.txt (binary) "
        "or JPEGImages/ + SegmentationClass/ + ImageSets/Segmentation/ (VOC)"
    )


def demo_config(data: str | None, output: Path, overrides: list[str] | None = None,
                task: str | None = None) -> CompareConfig:
    """The shipped demo comparison of ``task`` (semantic: teacher → student; binary: self-distillation),
    on generated synthetic data, or pointed at ``data`` (a real set, whose layout gives the task)."""
    if data is None:
        name, extra = f"demo_{task or 'semantic'}", []
    else:
        root = Path(data)
        found, layout = detect_layout(root)
        if task is not None and task != found:
            raise ConfigError(f"--data {root}: a {found} set (its layout: {layout}), not {task}; "
                              f"drop --task or give --task {found}")
        name = f"demo_{found}"
        extra = [f"data.layout={layout}", f"data.root={root}"]
        if layout == "voc":
            extra.append("data.voc_aug=" + str((root / "SegmentationClassAug").is_dir()).lower())
            extra += ["data.num_classes=21", "data.crop_size=257", "data.base_size=288"]
        else:
            extra += ["data.train_size=128", "data.multiscale_sizes=[96,128]", "data.test_size=128"]
    raw = read_yaml(find_config(name))
    if data is not None:  # the demo's own data (generated sets) gives way to the user's
        raw["set"] = [item for item in raw.get("set", []) if not item.startswith("data.")]
        for entry in raw["entries"]:
            entry["set"] = [item for item in entry.get("set", []) if not item.startswith("data.")]
    raw["set"] = [*raw.get("set", []), *extra]
    raw["output_dir"] = str(output / name.removeprefix("demo_"))
    raw = apply_overrides(raw, overrides or [])
    return validate_compare(raw, name)


# Seconds each default demo took on the README's 2-core CPU (from a fresh clone, two runs at
# once of one thread each; the semantic demo with nothing else running, 216 s in all; the binary one
# with two niced trainings beside it, 321 s), split into the teacher and each run (alone, distilled, or
# at matched compute), each with what surrounds it (starting its process, generating the data,
# scoring), and the tables and figures.
MEASURED_SECONDS = {
    "semantic": {"teacher": 115.0, "run": 47.0, "report": 5.0},
    "binary": {"run": 40.0, "matched": 75.0, "report": 5.0},
}


def expected_seconds(cc: CompareConfig, task: str = "semantic") -> float:
    """About how long the ``task`` demo ``cc`` takes on the README's CPU, its runs scheduled as
    ``segkd compare`` does: ``cc.jobs`` at a time (capped by the cores), teachers first, a
    distilled run once its teacher is done, a matched run once the entries it is timed by are."""
    took = MEASURED_SECONDS[task]
    seconds = {kind: took.get(kind, took["run"]) for kind in ("teacher", "run", "matched")}
    slots = [0.0] * max(1, min(cc.jobs, os.cpu_count() or 1))  # when each process is next free
    finish: dict[str, float] = {}  # entry -> when its last run ends
    order = sorted(cc.entries, key=lambda e: (e.role != "teacher", e.matched_time is not None))
    for entry in order:
        kind = "teacher" if entry.role == "teacher" else "matched" if entry.matched_time else "run"
        waits = waits_for(cc, entry)
        for _ in cc.seeds_of(entry):
            slot = min(range(len(slots)), key=slots.__getitem__)
            start = max([slots[slot], *(finish.get(name, 0.0) for name in waits)])
            slots[slot] = start + seconds[kind]
            finish[entry.name] = max(finish.get(entry.name, 0.0), slots[slot])
    return max(slots) + took["report"]


__all__ = ["demo_config", "detect_layout", "expected_seconds"]
