"""A comparison's config: its schema, loading, and the run config of each (entry, seed).

A comparison config names a run config to start from, the seeds, and one entry per row:

    kind: compare
    name: sod300_methods
    run_config: sod300_fusion      # every entry starts from this run config (file or shipped name)
    output_dir: runs/compare_sod300
    seeds: [1, 2, 3]
    set: ["train.epochs=10"]       # overrides for every entry
    baseline: baseline             # the student alone: gains are measured against it
    entries:
      - {name: baseline}
      - {name: pspsd, set: ["distill.methods=[{name: pspsd}]"]}
      - {name: byot, base: [methods/byot]}   # a method's recipe from its fragment, written once
      - {name: teacher, role: teacher, set: ["model.backbone=resnet50"], seeds: [1]}
      - {name: kd, teacher_from: teacher, set: ["distill.methods=[{name: logits_kd}]"]}
      - {name: kd_cached, teacher_from: teacher,
         set: ["distill.methods=[{name: logits_kd}]", "distill.teacher.cache=auto"]}
      - {name: baseline_matched, matched_time: {of: kd, from: baseline}}

``distill.teacher.cache: auto`` reads the teacher's logits from ``output_dir/teacher_cache/TEACHER``
(TEACHER: the ``teacher_from`` entry), filled by the first run that needs it and reused by every
seed and entry after it; entries sharing it must read the same maps (``logits`` or ``out``).

``matched_time: {of: kd, from: baseline}`` trains ``from``'s run config (a student alone) for as long
as ``of``'s runs took: ``round(E * T_of / T_from)`` epochs, E being ``from``'s epochs and T each
entry's median ``train_seconds`` over all its seeds (a run slowed by other jobs does not move it).
The schedule keeps its shape (poly over the longer run, the same warm-up fraction), validation as
often relative to the length. Its runs wait for every run of both entries (and of the teacher's,
with ``with_teacher``), and are resolved then from their stored metrics, so a rerun finds the same
epochs and reuses them. ``with_teacher: true`` adds to T_of the median train time of ``of``'s
``teacher_from`` entry: for self-distillation whose teacher is a trained copy of the network
(Tf-KD's), which a user trains too. The teacher counts in full for each matched run, as one user's
model costs it, though one teacher run serves every seed of the study.

A ``teacher_from`` entry distils from one run of its teacher entry at every seed: that entry's first seed,
or ``teacher_seed``'s, which stays when the seeds are overridden (``--set "seeds=[3]"``) and is trained too
when the teacher entry's seeds lack it.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segkd.config import Config, ConfigError, apply_overrides, fill_vars, find_config, read_config, read_yaml
from segkd.engine.checks import validate_run
from segkd.engine.determinism import describe_machine

SOD_COLUMNS = ("MAE", "maxFm", "maxFm_datasetPR", "Sm", "maxEm", "wFm")
SEMANTIC_COLUMNS = ("mIoU", "mAcc", "allAcc")
LOWER_IS_BETTER = {"MAE"}

AUTO_CACHE = "auto"
CACHE_KEYS = ("cache", "cache_scales", "cache_flip")  # an entry's teacher settings kept over teacher_from's


def metric_columns(task: str) -> tuple[str, ...]:
    """The metrics a comparison reports for ``task``; the first is the one gains are measured in."""
    return SOD_COLUMNS if task == "binary" else SEMANTIC_COLUMNS


class MatchedTime(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)
    of: str = Field(description="the entry whose training wall-clock is matched, e.g. the distilled recipe")
    from_: str = Field(alias="from", description="the student alone (no teacher) trained for longer")
    with_teacher: bool = Field(False, exclude_if=lambda value: not value,  # dumps as before it existed
                               description="count the training of `of`'s teacher_from entry too: a teacher "
                               "that is a trained copy of the student (Tf-KD's self-teacher) is part of its cost")


class CompareEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    base: list[str] = Field(default_factory=list, description="fragments merged over the run config before the "
                            "overrides, e.g. [methods/byot] or [recipes/kd_cwd]: a recipe written once")
    set: list[str] = Field(default_factory=list, description="overrides of the run config (key=value)")
    role: Literal["student", "teacher"] = "student"
    teacher_from: str | None = Field(None, description="entry whose trained model is this entry's teacher")
    teacher_seed: int | None = Field(
        None, exclude_if=lambda value: value is None,  # a config without it dumps as before it existed
        description="the seed of teacher_from's run this entry distils from (default: that entry's first seed); "
                    "trained too when that entry's seeds lack it, so `--set seeds=[4]` keeps the same teacher")
    seeds: list[int] | None = Field(None, description="default: the comparison's seeds")
    matched_time: MatchedTime | None = Field(
        None, exclude_if=lambda value: value is None,  # a config without it dumps as before it existed
        description="train `from`'s run config for the wall-clock of `of`'s runs (more epochs, same "
                    "schedule shape): a baseline at matched compute; the entry sets nothing else")


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "compare"
    run_config: str = Field(description="the run config every entry starts from")
    output_dir: Path
    seeds: list[int] = Field(default_factory=lambda: [1])
    set: list[str] = Field(default_factory=list)
    baseline: str
    entries: list[CompareEntry]
    latency_size: int | None = Field(None, description="input side for latency and GFLOPs (default: the test size)")
    qualitative_images: int = 4
    jobs: int = Field(1, ge=1, description="runs trained at once, each in its own process with an equal share of "
                                           "the CPU cores as threads (teachers first); 1: one after another")

    @model_validator(mode="after")
    def _check_names(self) -> CompareConfig:
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"entry names repeat: {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline '{self.baseline}' is not an entry; entries: {names}")
        for e in self.entries:
            if e.teacher_from is not None and e.teacher_from not in names[: names.index(e.name)]:
                raise ValueError(f"entry '{e.name}': teacher_from '{e.teacher_from}' must be an earlier entry")
            if e.teacher_seed is not None and e.teacher_from is None:
                raise ValueError(f"entry '{e.name}': teacher_seed {e.teacher_seed} without teacher_from; "
                                 "name the entry whose run is the teacher, or remove teacher_seed")
            if e.matched_time is not None:
                self._check_matched(e, names[: names.index(e.name)])
        return self

    def _check_matched(self, e: CompareEntry, earlier: list[str]) -> None:
        """A matched entry trains a plain student's config, measured against earlier, ordinary entries."""
        match = e.matched_time
        for key, name in (("of", match.of), ("from", match.from_)):
            if name not in earlier:
                raise ValueError(f"entry '{e.name}': matched_time.{key} '{name}' must be an earlier entry "
                                 f"(earlier: {earlier})")
            if self.entry(name).matched_time is not None:
                raise ValueError(f"entry '{e.name}': matched_time.{key} '{name}' is itself matched; "
                                 "name an entry trained for its own epochs")
        source = self.entry(match.from_)
        if source.role != "student" or source.teacher_from is not None:
            raise ValueError(f"entry '{e.name}': matched_time.from '{match.from_}' must be a student alone "
                             "(no teacher_from, not role: teacher)")
        if match.with_teacher and self.entry(match.of).teacher_from is None:
            raise ValueError(f"entry '{e.name}': matched_time.with_teacher: '{match.of}' has no teacher_from "
                             "whose training to count; remove with_teacher")
        if e.base or e.set or e.teacher_from is not None or e.role != "student":
            raise ValueError(f"entry '{e.name}': an entry with matched_time trains the config of '{match.from_}': "
                             "remove its base, set, teacher_from and role")

    def seeds_of(self, entry: CompareEntry) -> list[int]:
        """The seeds ``entry`` trains with: its own, or the comparison's, then any ``teacher_seed`` a later
        entry distils from that these lack (a teacher run is trained, not assumed)."""
        own = entry.seeds or self.seeds
        asked = [e.teacher_seed for e in self.entries if e.teacher_from == entry.name and e.teacher_seed is not None]
        return list(dict.fromkeys([*own, *asked]))

    def teacher_seed_of(self, entry: CompareEntry) -> int:
        """The seed of the ``teacher_from`` run ``entry`` distils from."""
        if entry.teacher_seed is not None:
            return entry.teacher_seed
        return self.seeds_of(self.entry(entry.teacher_from))[0]

    def entry(self, name: str) -> CompareEntry:
        return next(e for e in self.entries if e.name == name)


def runs_of(cc: CompareConfig) -> Iterator[tuple[CompareEntry, int]]:
    """Every (entry, seed) of the comparison, in order (a teacher entry before its students)."""
    for entry in cc.entries:
        for seed in cc.seeds_of(entry):
            yield entry, seed


def validate_compare(raw: dict[str, Any], source: str) -> CompareConfig:
    try:
        return CompareConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"{source}: invalid comparison config"]
        lines += [f"  {'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
                  for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_compare_config(name_or_path: str | Path, overrides: list[str] | None = None) -> CompareConfig:
    path = find_config(name_or_path)
    kind, raw = read_config(path)
    if kind != "compare":  # a run's keys would each be reported unknown: name the command it is for
        raise ConfigError(f"{path}: a run config (kind: {kind}), not a comparison: train it with "
                          f"segkd train {name_or_path}")
    return validate_compare(apply_overrides(raw, overrides or []), str(path))


RunConfigs = dict[tuple[str, int], Config]
"""``{(entry name, seed): run config}``, in the order of ``runs_of``."""
Results = dict[str, dict[int, dict[str, Any]]]
"""``{entry name: {seed: the run's metrics.json}}``"""


def _starts(cc: CompareConfig) -> Callable[[CompareEntry], dict[str, Any]]:
    """The raw config an entry starts from: the run config, composed with the entry's ``base`` fragments
    (``sod300_lite0+methods/byot``) when it has some; each distinct start read once."""
    read: dict[tuple[str, ...], dict[str, Any]] = {}

    def start(entry: CompareEntry) -> dict[str, Any]:
        entry = _source(cc, entry)
        key = tuple(entry.base)
        if key not in read:
            try:
                read[key] = read_yaml("+".join([cc.run_config, *key]), fill=False)  # filled after the sets
            except ConfigError as err:
                if not key:  # the run config itself: its own message names it
                    raise
                raise ConfigError(f"{cc.name}: entry '{entry.name}': base {list(key)}: {err}") from None
        return read[key]

    return start


def _source(cc: CompareConfig, entry: CompareEntry) -> CompareEntry:
    """The entry whose base and overrides ``entry`` trains with: ``from`` for a matched entry, else itself."""
    return cc.entry(entry.matched_time.from_) if entry.matched_time is not None else entry


def run_configs(cc: CompareConfig) -> RunConfigs:
    """The run config of every (entry, seed): the run config's YAML read once, each run validated once.

    A ``matched_time`` entry is resolved as its ``from`` entry's config (its own name and folder) until its
    epochs are known: ``with_matched`` resolves it from the stored times.
    """
    start = _starts(cc)
    configs: RunConfigs = {}
    for entry, seed in runs_of(cc):
        teacher = None
        if entry.teacher_from is not None:  # an earlier entry: resolved already
            teacher = configs[(entry.teacher_from, cc.teacher_seed_of(entry))]
        configs[(entry.name, seed)] = _resolve(cc, start(entry), entry, seed, teacher)
    return configs


def matched_epochs(cc: CompareConfig, entry: CompareEntry, configs: RunConfigs) -> int | None:
    """``round(E_from * T_of / T_from)`` for a ``matched_time`` entry, from the ``train_seconds`` stored in
    each run's metrics.json (T: the median over all the entry's seeds, which a run slowed by other jobs on
    the machine does not move; with ``with_teacher``, T_of also counts ``of``'s teacher entry's); None while
    a run of any of them is unfinished."""
    match = entry.matched_time
    teacher = cc.entry(match.of).teacher_from if match.with_teacher else None
    seconds: dict[str, float] = {}
    machines: dict[str, list[str]] = {}
    for name in dict.fromkeys(n for n in (match.of, match.from_, teacher) if n is not None):
        times = []
        for seed in cc.seeds_of(cc.entry(name)):
            path = configs[(name, seed)].run_dir / "metrics.json"
            if not path.is_file():
                return None
            report = json.loads(path.read_text())
            if not report.get("train_seconds"):
                raise ConfigError(f"{path}: no train_seconds (a run of an older version), which entry "
                                  f"'{entry.name}' needs for its epochs; retrain '{name}' (segkd compare --retrain)")
            times.append(float(report["train_seconds"]))
            if "machine" in report:  # runs of older versions did not record it
                machines.setdefault(describe_machine(report["machine"]), []).append(f"{name} seed {seed}")
        seconds[name] = statistics.median(times)
    if len(machines) > 1:  # times from two set-ups do not compare: the matched row would be wrong, not noisy
        where = "; ".join(f"{', '.join(runs)} on {machine}" for machine, runs in machines.items())
        raise ConfigError(f"entry '{entry.name}' matches training times measured on different set-ups ({where}); "
                          f"train the runs it is timed by on one machine and thread count (segkd compare --retrain)")
    epochs = configs[(match.from_, cc.seeds_of(cc.entry(match.from_))[0])].train.epochs
    spent = seconds[match.of] + (seconds[teacher] if teacher is not None else 0.0)
    return max(1, round(epochs * spent / seconds[match.from_]))


def matched_config(cc: CompareConfig, entry: CompareEntry, seed: int, configs: RunConfigs, epochs: int,
                   start: Callable[[CompareEntry], dict[str, Any]] | None = None) -> Config:
    """The run config of a ``matched_time`` entry at ``epochs`` (``matched_epochs``). Validation keeps its
    frequency relative to the run (a run validated only at its end still is), and a ``max_iters`` cap grows
    with the epochs."""
    plain = configs[(entry.matched_time.from_, cc.seeds_of(cc.entry(entry.matched_time.from_))[0])]
    scale = epochs / plain.train.epochs
    lengths = [f"train.epochs={epochs}", f"train.val_every={min(epochs, max(1, round(plain.train.val_every * scale)))}"]
    if plain.train.max_iters is not None:
        lengths.append(f"train.max_iters={max(1, round(plain.train.max_iters * scale))}")
    return _resolve(cc, (start or _starts(cc))(entry), entry, seed, None, lengths)


class Matched(NamedTuple):
    """Every run's config, a ``matched_time`` entry's at its epochs once they are known; ``waiting``: the
    matched entries whose epochs are not known yet (a run of the entries they are timed by unfinished), whose configs
    are still their ``from`` entry's: their runs wait for those runs, and are resolved and judged then."""

    configs: RunConfigs
    waiting: frozenset[str]


def with_matched(cc: CompareConfig, configs: RunConfigs) -> Matched:
    """``configs`` (``run_configs``) with every ``matched_time`` entry whose epochs are known resolved at
    them: each entry's epochs worked out once, from its entries' stored times."""
    resolved, waiting, start = dict(configs), set(), _starts(cc)
    for entry in (e for e in cc.entries if e.matched_time is not None):
        epochs = matched_epochs(cc, entry, configs)
        if epochs is None:
            waiting.add(entry.name)
            continue
        for seed in cc.seeds_of(entry):
            resolved[(entry.name, seed)] = matched_config(cc, entry, seed, configs, epochs, start)
    return Matched(resolved, frozenset(waiting))


def _resolve(cc: CompareConfig, base: dict[str, Any], entry: CompareEntry, seed: int,
             teacher: Config | None, lengths: list[str] | tuple[str, ...] = ()) -> Config:
    """``base`` (the raw YAML the entry starts from) with the comparison's and the entry's settings; ``teacher``:
    the resolved run of the ``teacher_from`` entry, whose trained model becomes this run's teacher;
    ``lengths``: a matched entry's epochs."""
    overrides = [*cc.set, *_source(cc, entry).set, *lengths, f"train.seed={seed}", f"name={entry.name}",
                 f"output_dir={cc.output_dir / entry.name / f'seed{seed}'}",
                 # a bar with rate and time left in a terminal; in a log, one line per finished run
                 f"train.progress={str(sys.stderr.isatty()).lower()}"]
    source = f"{cc.name}: entry '{entry.name}', seed {seed}"
    raw = fill_vars(apply_overrides(base, overrides), f"{cc.run_config} ({source})")
    if teacher is not None:
        kept = {k: v for k, v in ((raw.get("distill") or {}).get("teacher") or {}).items() if k in CACHE_KEYS}
        raw.setdefault("distill", {})["teacher"] = {
            "model": teacher.model.model_dump(),
            "checkpoint": str(teacher.run_dir / "last.pt"),
            **kept,
        }
    teacher_raw = (raw.get("distill") or {}).get("teacher")
    if isinstance(teacher_raw, dict) and teacher_raw.get("cache") == AUTO_CACHE:
        teacher_raw["cache"] = str(teacher_cache_dir(cc, entry, teacher_raw))
    try:  # the registry checks too: a bad model or method name stops the comparison before any run
        return validate_run(raw, source, [*cc.set, *_source(cc, entry).set])
    except ConfigError as err:  # an error blamed on one `set` item alone does not name the entry
        message = str(err)
        raise ConfigError(message if message.startswith(source) else
                          f"{source}: set {message.removeprefix('--set ')}") from None


def teacher_cache_dir(cc: CompareConfig, entry: CompareEntry, teacher: dict[str, Any]) -> Path:
    """Where ``distill.teacher.cache: auto`` puts an entry's teacher cache: one folder per teacher
    entry (or per entry naming its own teacher) and views, shared by every seed and every entry
    distilling from that teacher with those views."""
    scales, flip = [float(s) for s in teacher.get("cache_scales", [1.0])], bool(teacher.get("cache_flip", False))
    views = "" if scales == [1.0] and not flip else "-scales" + "_".join(f"{s:g}" for s in scales) + "-flip" * flip
    return cc.output_dir / "teacher_cache" / f"{entry.teacher_from or entry.name}{views}"


__all__ = ["CompareConfig", "CompareEntry", "Matched", "MatchedTime", "Results", "RunConfigs", "load_compare_config",
           "matched_config", "matched_epochs", "metric_columns", "run_configs", "runs_of", "validate_compare",
           "with_matched"]
