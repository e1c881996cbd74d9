"""``segkd compare``: the same budget and seeds for a list of methods, one honest table.

A comparison config names a run config to start from, the seeds, and one entry per row:

    name: sod300_methods
    run_config: sod300_fusion      # every entry starts from this run config (file or shipped name)
    output_dir: runs/compare_sod300
    seeds: [1, 2, 3]
    set: ["train.epochs=10"]       # overrides for every entry
    baseline: baseline             # the student alone: gains are measured against it
    entries:
      - {name: baseline}
      - {name: pspsd, set: ["distill.methods=[{name: pspsd}]"]}
      - {name: teacher, role: teacher, set: ["model.backbone=resnet50"], seeds: [1]}
      - {name: kd, teacher_from: teacher, set: ["distill.methods=[{name: logits_kd}]"]}
      - {name: kd_cached, teacher_from: teacher,
         set: ["distill.methods=[{name: logits_kd}]", "distill.teacher.cache=auto"]}

``distill.teacher.cache: auto`` reads the teacher's logits from ``output_dir/teacher_cache/TEACHER``
(TEACHER: the ``teacher_from`` entry), filled by the first run that needs it and reused by every
seed and entry after it; entries sharing it must read the same maps (``logits`` or ``out``).

Each (entry, seed) trains into ``output_dir/entry/seedN``; finished runs are reused and
interrupted ones resumed, so running the command again continues where it stopped. A run whose
stored config differs from the one the comparison now resolves is never reused (``--retrain``).
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segkd.commands import plots
from segkd.commands.benchmark import gflops, measure_latency
from segkd.config import Config, ConfigError, apply_overrides, find_config, read_yaml, validate
from segkd.data import build_dataset
from segkd.data.build import resolve_root
from segkd.data.classes import voc_palette
from segkd.data.readers import read_binary_mask, read_image, read_label
from segkd.engine.colorize import colorize_labels
from segkd.engine.evaluate import evaluate_with_config
from segkd.engine.resume import config_differences, normalised
from segkd.engine.run import load_trained
from segkd.engine.teacher_cache import fill_ahead
from segkd.engine.trainer import fit
from segkd.models.base import count_parameters

SOD_COLUMNS = ("MAE", "maxFm", "maxFm_datasetPR", "Sm", "maxEm", "wFm")
SEMANTIC_COLUMNS = ("mIoU", "mAcc", "allAcc")
LOWER_IS_BETTER = {"MAE"}


class CompareEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    set: list[str] = Field(default_factory=list, description="overrides of the run config (key=value)")
    role: Literal["student", "teacher"] = "student"
    teacher_from: str | None = Field(None, description="entry whose trained model is this entry's teacher")
    seeds: list[int] | None = Field(None, description="default: the comparison's seeds")


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
        return self


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
    return validate_compare(apply_overrides(read_yaml(path), overrides or []), str(path))


def run_config(cc: CompareConfig, entry: CompareEntry, seed: int) -> Config:
    """The run config of one (entry, seed)."""
    raw = read_yaml(find_config(cc.run_config))
    overrides = [*cc.set, *entry.set, f"train.seed={seed}", f"name={entry.name}",
                 f"output_dir={cc.output_dir / entry.name / f'seed{seed}'}",
                 # a bar with rate and time left in a terminal; in a log, one line per finished run
                 f"train.progress={str(sys.stderr.isatty()).lower()}"]
    raw = apply_overrides(raw, overrides)
    if entry.teacher_from is not None:
        teacher = next(e for e in cc.entries if e.name == entry.teacher_from)
        teacher_seed = (teacher.seeds or cc.seeds)[0]
        teacher_cfg = run_config(cc, teacher, teacher_seed)
        kept = {k: v for k, v in ((raw.get("distill") or {}).get("teacher") or {}).items() if k in CACHE_KEYS}
        raw.setdefault("distill", {})["teacher"] = {
            "model": teacher_cfg.model.model_dump(),
            "checkpoint": str(teacher_cfg.run_dir / "last.pt"),
            **kept,
        }
    teacher_raw = (raw.get("distill") or {}).get("teacher")
    if isinstance(teacher_raw, dict) and teacher_raw.get("cache") == AUTO_CACHE:
        teacher_raw["cache"] = str(teacher_cache_dir(cc, entry, teacher_raw))
    return validate(raw, f"{cc.name}: entry '{entry.name}', seed {seed}")


AUTO_CACHE = "auto"
CACHE_KEYS = ("cache", "cache_scales", "cache_flip")  # an entry's teacher settings kept over teacher_from's


def teacher_cache_dir(cc: CompareConfig, entry: CompareEntry, teacher: dict[str, Any]) -> Path:
    """Where ``distill.teacher.cache: auto`` puts an entry's teacher cache: one folder per teacher
    entry (or per entry naming its own teacher) and views, shared by every seed and every entry
    distilling from that teacher with those views."""
    scales, flip = [float(s) for s in teacher.get("cache_scales", [1.0])], bool(teacher.get("cache_flip", False))
    views = "" if scales == [1.0] and not flip else "-scales" + "_".join(f"{s:g}" for s in scales) + "-flip" * flip
    return cc.output_dir / "teacher_cache" / f"{entry.teacher_from or entry.name}{views}"


def stored_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run directory was trained with (``config.yaml``), if any."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    stored = yaml.safe_load(path.read_text())
    return stored if isinstance(stored, dict) else None


def stale_runs(cc: CompareConfig) -> dict[tuple[str, int], list[str]]:
    """``{(entry, seed): differing keys}`` of run directories trained with another config.

    A student whose teacher entry is stale is stale too: its teacher would be retrained.
    """
    stale: dict[tuple[str, int], list[str]] = {}
    stale_entries: set[str] = set()
    for entry in cc.entries:
        for seed in entry.seeds or cc.seeds:
            cfg = run_config(cc, entry, seed)
            stored = stored_config(cfg.run_dir)
            diffs = config_differences(normalised(stored), cfg.to_dict()) if stored is not None else []
            if entry.teacher_from in stale_entries and stored is not None:
                diffs.append(f"teacher entry '{entry.teacher_from}' is retrained")
            if diffs:
                stale[(entry.name, seed)] = diffs
                stale_entries.add(entry.name)
    return stale


def _set_aside(run_dir: Path) -> Path:
    """Move a stale run directory out of the way (kept, not deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    run_dir.rename(target)
    return target


def train_all(cc: CompareConfig, log=print, retrain: bool = False,
              report_only: bool = False) -> dict[str, dict[int, dict[str, Any]]]:
    """Train every (entry, seed) not finished yet. Returns ``{entry: {seed: metrics.json}}``.

    A run directory trained with another resolved config is never reused: the comparison stops
    and lists the differing keys, or with ``retrain`` the old run is moved aside and trained again.
    ``report_only``: train nothing; return the runs finished with the current config.
    """
    stale = stale_runs(cc)
    if report_only:
        return finished_runs(cc, stale, log)
    if stale and not retrain:
        listed = "\n".join(f"  {name} seed {seed}: {'; '.join(diffs[:5])}" for (name, seed), diffs in stale.items())
        raise ConfigError(
            f"{len(stale)} finished or started run(s) under {cc.output_dir} were trained with another "
            f"config; rerun with --retrain to train them again (the old runs are kept beside them), "
            f"or choose another output_dir:\n{listed}"
        )
    todo: list[Run] = []
    teacher_of = {e.name: e.teacher_from for e in cc.entries}
    for entry, seed in runs_of(cc):
        cfg = run_config(cc, entry, seed)
        if (entry.name, seed) in stale:
            log(f"[{entry.name} seed {seed}] config changed, old run moved to {_set_aside(cfg.run_dir)}")
        if (cfg.run_dir / "metrics.json").is_file():
            log(f"[{entry.name} seed {seed}] finished earlier with the same config, reused")
        else:
            todo.append(Run(entry.name, seed, cfg, teacher_of[entry.name]))
    teachers = set(teacher_of.values())
    todo.sort(key=lambda run: run.name not in teachers)  # teachers first: others wait for them
    train_runs(todo, cc.jobs, log)
    return {entry.name: {seed: json.loads((run_config(cc, entry, seed).run_dir / "metrics.json").read_text())
                         for seed in entry.seeds or cc.seeds} for entry in cc.entries}


def runs_of(cc: CompareConfig) -> Iterator[tuple[CompareEntry, int]]:
    """Every (entry, seed) of the comparison, in order."""
    for entry in cc.entries:
        for seed in entry.seeds or cc.seeds:
            yield entry, seed


@dataclass
class Run:
    """One (entry, seed) to train; ``teacher``: the entry whose runs must finish before it starts."""

    name: str
    seed: int
    cfg: Config
    teacher: str | None = None


def train_runs(runs: list[Run], jobs: int, log=print) -> None:
    """Train ``runs``, ``jobs`` at once; each process gets an equal share of the cores as threads
    (two runs on two cores: one thread each, as ``OMP_NUM_THREADS=1`` gives). A run starts once
    its teacher entry's runs are done, its teacher cache filled first (once, in this process)."""
    def started(run: Run) -> None:
        log(f"[{run.name} seed {run.seed}] {'resuming' if _resumes(run.cfg) else 'training'} → {run.cfg.run_dir}")

    def finished(run: Run, report: dict[str, Any]) -> None:
        main = (SOD_COLUMNS if run.cfg.task == "binary" else SEMANTIC_COLUMNS)[0]
        log(f"[{run.name} seed {run.seed}] done: {main} {report['student'].get(main, float('nan')):.4f}, "
            f"{report.get('train_seconds', float('nan')):.0f} s of training")

    if jobs == 1 or len(runs) <= 1:
        for run in runs:  # in order: teachers come first
            started(run)
            finished(run, fit(run.cfg, resume=_resumes(run.cfg)))
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads are running
    rows = context.Queue()
    for row in range(min(jobs, len(runs))):
        rows.put(row)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    waiting, filled = list(runs), set()
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context, initializer=_worker_init,
                             initargs=(rows, threads)) as pool:
        running: dict[Any, Run] = {}
        while waiting or running:
            busy = {run.name for run in [*waiting, *running.values()]}
            ready = [r for r in waiting if r.teacher not in busy]
            for run in ready[: max(0, jobs - len(running))]:  # started when a process is free for it
                cache = run.cfg.distill.teacher.cache if run.cfg.distill.teacher is not None else None
                if cache is not None and cache not in filled:  # shared by runs side by side: fill it once
                    filled.add(cache)
                    fill_ahead(run.cfg)
                waiting.remove(run)
                started(run)
                running[pool.submit(_fit_in_worker, run.cfg)] = run
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished(running.pop(future), future.result())


def _resumes(cfg: Config) -> bool:
    return (cfg.run_dir / "last.pt").is_file()


def _worker_init(rows: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["SEGKD_PROGRESS_ROW"] = str(rows.get())  # this worker's line for its progress bars
    threading.Thread(target=_stop_with_parent, args=(os.getppid(),), daemon=True).start()


def _stop_with_parent(parent: int, every: float = 2.0) -> None:
    """A comparison ended by a signal leaves no run training on: its workers stop as SIGTERM asks
    (a checkpoint at the current step, resumed by the next ``segkd compare``)."""
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)


def _fit_in_worker(cfg: Config) -> dict[str, Any]:
    return fit(cfg, resume=_resumes(cfg))


def finished_runs(cc: CompareConfig, stale: dict[tuple[str, int], list[str]],
                  log=print) -> dict[str, dict[int, dict[str, Any]]]:
    """``{entry: {seed: metrics.json}}`` of the runs finished with the current config; says which are left out."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for entry in cc.entries:
        results[entry.name] = {}
        for seed in entry.seeds or cc.seeds:
            done = run_config(cc, entry, seed).run_dir / "metrics.json"
            if (entry.name, seed) in stale:
                log(f"[{entry.name} seed {seed}] trained with another config, left out")
            elif done.is_file():
                results[entry.name][seed] = json.loads(done.read_text())
            else:
                log(f"[{entry.name} seed {seed}] not finished, left out")
    return results


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


MIN_SEEDS_FOR_VERDICT = 3
SIGNIFICANCE_RULE = (
    "A gain is significant when it exceeds twice its standard error, "
    "2·sqrt(s_a²/n_a + s_b²/n_b) over the seeds of the row (a) and of the baseline (b), "
    f"both with at least {MIN_SEEDS_FOR_VERDICT} seeds; with fewer seeds no verdict is given."
)


def significance(gain: float, row: dict[str, Any], base: dict[str, Any], main: str) -> tuple[str, float | None]:
    """(verdict, threshold) of ``gain`` = row − baseline in ``main`` under ``SIGNIFICANCE_RULE``."""
    counts = (row["seeds"], base["seeds"])
    if min(counts) < MIN_SEEDS_FOR_VERDICT:
        return f"unknown ({min(counts)} seed{'s' if min(counts) > 1 else ''})", None
    std_error = math.sqrt(row[f"{main}_std"] ** 2 / counts[0] + base[f"{main}_std"] ** 2 / counts[1])
    threshold = 2 * std_error
    if abs(gain) <= threshold:
        return "no (within 2 SE)", threshold
    better = -gain if main in LOWER_IS_BETTER else gain
    return ("yes (better)" if better > 0 else "yes (worse)"), threshold


def summarise(cc: CompareConfig, results: dict[str, dict[int, dict[str, Any]]], task: str) -> list[dict[str, Any]]:
    """One row per entry: metric mean/std over seeds, and the gain over the baseline with its
    verdict under ``SIGNIFICANCE_RULE``."""
    columns = SOD_COLUMNS if task == "binary" else SEMANTIC_COLUMNS
    rows = []
    for entry in (e for e in cc.entries if results[e.name]):  # entries with no finished run have no row
        row: dict[str, Any] = {"method": entry.name, "role": entry.role, "seeds": len(results[entry.name])}
        for col in columns:
            vals = [r["student"][col] for r in results[entry.name].values() if col in r["student"]]
            if vals:
                row[col], row[f"{col}_std"] = _mean_std(vals)
        times = [r["train_seconds"] for r in results[entry.name].values() if "train_seconds" in r]
        if times:  # runs of older versions did not record it
            row["train_s"] = statistics.fmean(times)
        rows.append(row)
    base = next((r for r in rows if r["method"] == cc.baseline), None)
    if base is None:
        raise ConfigError(f"{cc.name}: the baseline '{cc.baseline}' has no finished run; train it first")
    main = columns[0]
    for row in rows:
        row["gain"] = row[main] - base[main]
        if row["method"] == cc.baseline:
            row["significant"], row["threshold"] = "-", None
        else:
            row["significant"], row["threshold"] = significance(row["gain"], row, base, main)
    return rows


def add_cost(rows: list[dict[str, Any]], models: dict[str, torch.nn.Module], size: int) -> None:
    """Parameters, GFLOPs and CPU latency (and CUDA latency when present) of each inference model."""
    for row in rows:
        model = models[row["method"]]
        row["params_M"] = count_parameters(model) / 1e6
        row["GFLOPs"] = gflops(model, (size, size))
        row["cpu_ms"] = measure_latency(model, (size, size), device="cpu", warmup=1, iters=5)["latency_ms_median"]
        if torch.cuda.is_available():
            row["cuda_ms"] = measure_latency(model, (size, size), device="cuda")["latency_ms_median"]


def _fmt(row: dict[str, Any], col: str) -> str:
    value = row.get(col)
    if value is None:
        return "-"
    std = row.get(f"{col}_std")
    text = f"{value:.4f}"
    return f"{text} ± {std:.4f}" if std is not None else text


def format_markdown(rows: list[dict[str, Any]], task: str, main: str, title: str) -> str:
    columns = list(SOD_COLUMNS if task == "binary" else SEMANTIC_COLUMNS)
    head = ["method", "seeds", *columns, "train (min)", "params (M)", "GFLOPs", "CPU ms"]
    has_cuda = any("cuda_ms" in r for r in rows)
    head += (["CUDA ms"] if has_cuda else []) + [f"gain in {main}", "2 SE", "significant"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"] + (" (teacher)" if r["role"] == "teacher" else ""), str(r["seeds"])]
        cells += [_fmt(r, c) for c in columns]
        cells += [f"{r['train_s'] / 60:.1f}" if "train_s" in r else "-"]
        cells += [f"{r.get('params_M', float('nan')):.2f}", f"{r.get('GFLOPs', float('nan')):.2f}",
                  f"{r.get('cpu_ms', float('nan')):.1f}"]
        cells += [f"{r['cuda_ms']:.2f}"] if has_cuda else []
        threshold = r.get("threshold")
        cells += [f"{r['gain']:+.4f}", "-" if threshold is None else f"{threshold:.4f}", r["significant"]]
        lines.append("| " + " | ".join(cells) + " |")
    arrow = "lower" if main in LOWER_IS_BETTER else "higher"
    lines += ["", f"{main}: {arrow} is better. Metrics of the final model of each run (no checkpoint "
              "picked on the test set), mean ± std over seeds. Train: wall-clock minutes of a run's "
              "training loop (validation included), mean over seeds, on the machine that ran it. "
              + SIGNIFICANCE_RULE]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out: Path, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _history(run_dir: Path, metric: str) -> dict[str, list[Any]]:
    steps, losses, val_steps, vals = [], [], [], []
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train" in rec:
            steps.append(rec["iteration"])
            losses.append(rec["train"]["total"])
        if "val" in rec and metric in rec["val"]:
            val_steps.append(rec["iteration"])
            vals.append(rec["val"][metric])
    return {"step": steps, "loss": losses, "val_step": val_steps, "val_metric": vals}


def make_plots(cc: CompareConfig, rows: list[dict[str, Any]], configs: dict[str, Config],
               models: dict[str, torch.nn.Module], task: str, main: str) -> list[Path]:
    """Bar chart, training curves, qualitative grid, and (binary) PR and F-threshold curves."""
    out = cc.output_dir
    written = [
        plots.plot_metric_bars({r["method"]: (r[main], r.get(f"{main}_std")) for r in rows}, main,
                               out / f"bars_{main}.png"),
        plots.plot_training_curves({name: _history(cfg.run_dir, main) for name, cfg in configs.items()},
                                   out / "training_curves.png", metric_name=main),
    ]
    first = next(iter(configs.values()))
    dataset = build_dataset(first.data, task, "val")
    samples = dataset.samples[: cc.qualitative_images]

    def shown(label: np.ndarray) -> np.ndarray:
        if task == "binary":
            return label if label.max() > 1 else (label * 255).astype(np.uint8)
        return colorize_labels(label, first.data.num_classes)

    grid = [{"name": s.name, "image": read_image(s.image), "ground truth": shown(_read_mask(s.mask, task, dataset))}
            for s in samples]
    curves: dict[str, dict[str, Any]] = {}
    for name, cfg in configs.items():
        pred_dir = out / "predictions" / name
        device = next(models[name].parameters()).device
        metrics = evaluate_with_config(models[name], dataset, cfg, device, save_dir=pred_dir,
                                       palette=voc_palette(), return_curves=task == "binary")
        if task == "binary":
            curves[name] = metrics["curves"]
        for row, sample in zip(grid, samples):
            row[name] = shown(np.array(Image.open(pred_dir / f"{sample.name}.png")))
    written.append(plots.plot_qualitative_grid(grid, ["image", "ground truth", *configs], out / "qualitative.png"))
    if task == "binary":
        written.append(plots.plot_pr_curves(curves, out / "pr_curves.png"))
        written.append(plots.plot_f_threshold(curves, out / "f_threshold.png"))
    return written


def _read_mask(path: Path, task: str, dataset: Any) -> np.ndarray:
    """The ground truth as the data set reads it: a layout's label file (Cityscapes, ADE20K, CamVid)
    goes through its label map, so the figure shows train ids, as the predictions do."""
    if task == "binary":
        return read_binary_mask(path)
    label_map = getattr(dataset, "label_map", None)
    return label_map(read_label(path), path) if label_map is not None else read_label(path)


def compare(cc: CompareConfig, log=print, retrain: bool = False, report_only: bool = False) -> dict[str, Any]:
    """Train what is missing, then write ``results.{md,csv,json}`` and the plots.

    ``retrain``: train again (moving the old run aside) every run whose stored config differs.
    ``report_only``: train nothing; the tables and plots show the runs finished so far.
    """
    first = run_config(cc, cc.entries[0], (cc.entries[0].seeds or cc.seeds)[0])
    task = first.task
    resolve_root(first.data, task)
    results = train_all(cc, log, retrain, report_only)
    main = (SOD_COLUMNS if task == "binary" else SEMANTIC_COLUMNS)[0]
    rows = summarise(cc, results, task)
    configs: dict[str, Config] = {}
    models: dict[str, torch.nn.Module] = {}
    for entry in (e for e in cc.entries if results[e.name]):
        cfg = run_config(cc, entry, (entry.seeds or cc.seeds)[0])
        configs[entry.name] = cfg
        # the comparison's own config names the model, so an imported one was asked for
        _, models[entry.name], _ = load_trained(cfg.run_dir / "last.pt", allow_import=cfg.model.name == "import")
    size = cc.latency_size or (first.data.test_size if task == "binary" else first.data.crop_size)
    add_cost(rows, models, size)
    counts = {len(e.seeds or cc.seeds) for e in cc.entries}
    seeds = f"{min(counts)}-{max(counts)}" if len(counts) > 1 else str(min(counts))
    markdown = format_markdown(rows, task, main, f"{cc.name}: {task} segmentation, {seeds} seed(s) per row")
    missing = [f"{e.name} ({len(results[e.name])} of {len(e.seeds or cc.seeds)} seeds)" for e in cc.entries
               if len(results[e.name]) < len(e.seeds or cc.seeds)]
    if missing:
        markdown += f"\nNot finished yet (segkd compare trains them): {', '.join(missing)}.\n"
    write_tables(rows, cc.output_dir, markdown)
    figures = make_plots(cc, rows, configs, models, task, main)
    return {"rows": rows, "markdown": markdown, "figures": figures}


__all__ = ["CompareConfig", "compare", "format_markdown", "load_compare_config", "summarise"]
