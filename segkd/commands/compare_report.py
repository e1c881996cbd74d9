"""A comparison's report from its finished runs: statistics and significance, cost, tables, plots."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segkd.commands import plots
from segkd.commands.benchmark import gflops, measure_latency, one_thread
from segkd.commands.compare_config import (
    LOWER_IS_BETTER,
    CompareConfig,
    CompareEntry,
    Results,
    RunConfigs,
    metric_columns,
)
from segkd.commands.head_scores import format_heads, head_scores
from segkd.commands.loss_terms import format_terms, loss_terms
from segkd.commands.per_seed import format_machines, format_per_seed, paired_gains, per_seed
from segkd.config import Config, ConfigError
from segkd.data import build_dataset
from segkd.data.classes import layout_palette
from segkd.data.readers import read_binary_mask, read_image, read_label
from segkd.engine.builders import model_kwargs
from segkd.engine.colorize import colorize_labels
from segkd.engine.evaluate import evaluate_with_config
from segkd.engine.run import load_trained
from segkd.models import build_model
from segkd.models.base import count_parameters

MIN_SEEDS_FOR_VERDICT = 3
SIGNIFICANCE_RULE = (
    "A gain is significant when it exceeds twice its standard error, "
    "2·sqrt(s_a²/n_a + s_b²/n_b) over the seeds of the row (a) and of the baseline (b), "
    f"both with at least {MIN_SEEDS_FOR_VERDICT} seeds; with fewer seeds no verdict is given."
)

GAP_NOTE = (" Teacher gap closed: a distilled row's gain over the baseline as a fraction of its teacher's "
            "lead over the baseline (means over seeds).")


def write_report(cc: CompareConfig, configs: RunConfigs, results: Results) -> dict[str, Any]:
    """Write ``results.{md,csv,json}`` and the plots of the finished runs; return the rows, the
    markdown and the figures' paths. ``configs``: every (entry, seed)'s run config, a ``matched_time``
    entry's at the epochs its runs trained for (``train_all`` gives them)."""
    first = next(iter(configs.values()))
    task, main = first.task, metric_columns(first.task)[0]
    rows = summarise(cc, results, task)
    reported = [e for e in cc.entries if results[e.name]]  # entries with no finished run have no row
    entry_configs = {e.name: configs[(e.name, min(results[e.name]))] for e in reported}
    models, kept, unbuilt = inference_models(reported, configs, results)
    size = cc.latency_size or (first.data.test_size if task == "binary" else first.data.crop_size)
    add_cost(rows, models, size)
    for row in rows:
        row["epochs"] = entry_configs[row["method"]].train.epochs
    notes = [_matched_note(cc, e, configs, rows, main) for e in reported if e.matched_time is not None]
    counts = {len(cc.seeds_of(e)) for e in cc.entries}
    seeds = f"{min(counts)}-{max(counts)}" if len(counts) > 1 else str(min(counts))
    markdown = format_markdown(rows, task, main, f"{cc.name}: {task} segmentation, {seeds} seed(s) per row", notes)
    terms = loss_terms(cc, configs, results)
    for row in rows:
        row["loss_terms"] = terms.get(row["method"], {})
    markdown += format_terms(terms)
    heads = head_scores(cc, results, main)
    for row in rows:
        if row["method"] in heads:
            row["heads"] = heads[row["method"]]
    base = next(row for row in rows if row["method"] == cc.baseline)
    markdown += format_heads(heads, main, (cc.baseline, base[main]))
    seeds_of = per_seed(cc, results, main)
    teachers = frozenset(row["method"] for row in rows if row["role"] == "teacher")
    paired = paired_gains(seeds_of, cc.baseline, unpaired=teachers)
    for row in rows:
        row["per_seed"] = seeds_of[row["method"]]
        if row["method"] in paired:
            row["paired_gain"], row["paired_2se"], row["paired_seeds"] = paired[row["method"]]
    markdown += format_per_seed(seeds_of, paired, cc.baseline, main)
    markdown += format_machines(cc, results)
    missing = [f"{e.name} ({len(results[e.name])} of {len(cc.seeds_of(e))} seeds)" for e in cc.entries
               if len(results[e.name]) < len(cc.seeds_of(e))]
    if missing:
        markdown += f"\nNot finished yet (segkd compare trains them): {', '.join(missing)}.\n"
    if unkept := [name for name in entry_configs if name not in kept]:
        markdown += (f"\nReused from their records alone (config.yaml, metrics.json, history.jsonl; no checkpoint "
                     f"kept): {', '.join(unkept)}. Their cost is the model their config builds; they are not in the "
                     "prediction figures.\n")
    for name, why in unbuilt.items():
        markdown += f"\n{name}: no cost columns (its model could not be built from its config here: {why}).\n"
    write_tables(rows, cc.output_dir, markdown)
    figures = make_plots(cc, rows, entry_configs, kept, models, task, main)
    return {"rows": rows, "markdown": markdown, "figures": figures}


def inference_models(reported: list[CompareEntry], configs: RunConfigs, results: Results
                     ) -> tuple[dict[str, torch.nn.Module], dict[str, Config], dict[str, str]]:
    """Each entry's inference model, for its cost; ``{entry: config}`` of the finished run whose
    checkpoint it was loaded from (the prediction figures use it); ``{entry: why}`` of the entries
    with no model. An entry whose finished runs kept no checkpoint (reused from their records:
    config.yaml, metrics.json and history.jsonl, what a study can keep under version control) gets
    the untrained model its config builds, with no weights read: the same parameters, FLOPs and
    latency; if it cannot be built here, it has no cost columns."""
    models: dict[str, torch.nn.Module] = {}
    kept: dict[str, Config] = {}
    unbuilt: dict[str, str] = {}
    for entry in reported:
        runs = [configs[(entry.name, seed)] for seed in sorted(results[entry.name])]
        cfg = next((run for run in runs if (run.run_dir / "last.pt").is_file()), None)
        if cfg is not None:  # the comparison's own config names the model, so an imported one was asked for
            _, models[entry.name], _ = load_trained(cfg.run_dir / "last.pt", allow_import=cfg.model.name == "import")
            kept[entry.name] = cfg
            continue
        kwargs = {k: v for k, v in model_kwargs(runs[0].model, runs[0]).items() if not k.startswith("pretrained")}
        try:
            models[entry.name] = build_model(runs[0].model.name, **kwargs).eval()
        except Exception as err:  # any builder error: the report goes on without this row's cost, and says why
            unbuilt[entry.name] = f"{type(err).__name__}: {err}".splitlines()[0]
    return models, kept, unbuilt


def _matched_note(cc: CompareConfig, entry: CompareEntry, configs: RunConfigs,
                  rows: list[dict[str, Any]], main: str) -> str:
    """What a ``matched_time`` row is, and the verdict of the entry it matches against it (the
    same rule as against the baseline), for the table's footnote."""
    match = entry.matched_time

    def epochs(name: str) -> int:
        return configs[(name, cc.seeds_of(cc.entry(name))[0])].train.epochs

    by_name = {row["method"]: row for row in rows}
    matched, of = by_name[entry.name], by_name[match.of]
    gain = of[main] - matched[main]
    verdict, threshold = significance(gain, of, matched, main)
    margin = f"2 SE {threshold:.4f}" if threshold is not None else "2 SE -"
    teacher = by_name.get(cc.entry(match.of).teacher_from or "")
    gap = ""
    if teacher is not None and teacher["role"] == "teacher":
        lead = teacher[main] - matched[main]
        if improvement(lead, main) > 0:
            gap = f", {100 * gain / lead:.0f} % of the teacher's lead over {entry.name} closed"
    spent = f"{match.of} and its teacher {cc.entry(match.of).teacher_from}" if match.with_teacher else match.of
    return (f"{entry.name}: {match.from_} alone at the training wall-clock of {spent}: {epochs(entry.name)} "
            f"epochs ({match.from_}: {epochs(match.from_)}; the ratio of the entries' median train times "
            f"over all their seeds). {match.of} against {entry.name}: {gain:+.4f} {main}, {margin}, "
            f"significant: {verdict}{gap}.")


def improvement(change: float, main: str) -> float:
    """``change`` of ``main`` signed so that positive is better (MAE falls, mIoU rises)."""
    return -change if main in LOWER_IS_BETTER else change


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def significance(gain: float, row: dict[str, Any], base: dict[str, Any], main: str) -> tuple[str, float | None]:
    """(verdict, threshold) of ``gain`` = row − baseline in ``main`` under ``SIGNIFICANCE_RULE``."""
    counts = (row["seeds"], base["seeds"])
    if min(counts) < MIN_SEEDS_FOR_VERDICT:
        return f"unknown ({min(counts)} seed{'s' if min(counts) > 1 else ''})", None
    std_error = math.sqrt(row[f"{main}_std"] ** 2 / counts[0] + base[f"{main}_std"] ** 2 / counts[1])
    threshold = 2 * std_error
    if abs(gain) <= threshold:
        return "no (within 2 SE)", threshold
    better = improvement(gain, main)
    return ("yes (better)" if better > 0 else "yes (worse)"), threshold


def summarise(cc: CompareConfig, results: Results, task: str) -> list[dict[str, Any]]:
    """One row per entry: metric mean/std over seeds, and the gain over the baseline with its
    verdict under ``SIGNIFICANCE_RULE``."""
    columns = metric_columns(task)
    rows = []
    for entry in (e for e in cc.entries if results[e.name]):  # entries with no finished run have no row
        row: dict[str, Any] = {"method": entry.name, "role": entry.role, "seeds": len(results[entry.name])}
        for col in columns:
            vals = [r["student"][col] for r in results[entry.name].values() if col in r["student"]]
            if vals:
                row[col], row[f"{col}_std"] = _mean_std(vals)
        times = [r["train_seconds"] for r in results[entry.name].values() if "train_seconds" in r]
        if times:  # runs of older versions did not record it
            row["train_s"] = statistics.median(times)  # as matched_time times runs: a slowed run does not move it
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
    add_gap_closed(cc, rows, main)
    return rows


def add_gap_closed(cc: CompareConfig, rows: list[dict[str, Any]], main: str) -> None:
    """``gap_closed`` of each distilled row: its gain over the baseline as a fraction of its teacher's
    (the ``teacher_from`` entry, when that is a teacher ahead of the baseline; 1 means the student
    matches its teacher, a negative value that it fell behind the baseline)."""
    by_name = {row["method"]: row for row in rows}
    for entry in cc.entries:
        row, teacher = by_name.get(entry.name), by_name.get(entry.teacher_from or "")
        if row is None or teacher is None or teacher["role"] != "teacher":
            continue
        if improvement(teacher["gain"], main) > 0:
            row["gap_closed"] = row["gain"] / teacher["gain"]


def add_cost(rows: list[dict[str, Any]], models: dict[str, torch.nn.Module], size: int) -> None:
    """Parameters, GFLOPs and CPU latency (and CUDA latency when present) of each row's inference
    model (none for a row without one)."""
    for row in rows:
        model = models.get(row["method"])
        if model is None:  # a record whose model cannot be built here
            continue
        row["params_M"] = count_parameters(model) / 1e6
        row["GFLOPs"] = gflops(model, (size, size))
        # one thread: with more, a report written beside trainings measured the same network 190 to 2430 ms
        # (threads waiting on threads the trainings hold); one thread is the least disturbed, not undisturbed
        with one_thread():
            row["cpu_ms"] = measure_latency(model, (size, size), device="cpu", warmup=3, iters=10)["latency_ms_median"]
        if torch.cuda.is_available():
            row["cuda_ms"] = measure_latency(model, (size, size), device="cuda")["latency_ms_median"]


def _fmt(row: dict[str, Any], col: str) -> str:
    value = row.get(col)
    if value is None:
        return "-"
    std = row.get(f"{col}_std")
    text = f"{value:.4f}"
    return f"{text} ± {std:.4f}" if std is not None else text


def format_markdown(rows: list[dict[str, Any]], task: str, main: str, title: str, notes: list[str] = ()) -> str:
    """The table of ``rows``; ``notes``: sentences added to its footnote (what a row is)."""
    columns = list(metric_columns(task))
    head = ["method", "seeds", *columns, "train (min)", "params (M)", "GFLOPs", "CPU ms"]
    has_cuda = any("cuda_ms" in r for r in rows)
    has_gap = any("gap_closed" in r for r in rows)
    head += (["CUDA ms"] if has_cuda else []) + [f"gain in {main}", "2 SE", "significant"]
    head += ["teacher gap closed"] if has_gap else []
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
        cells += [f"{100 * r['gap_closed']:.0f} %" if "gap_closed" in r else "-"] if has_gap else []
        lines.append("| " + " | ".join(cells) + " |")
    arrow = "lower" if main in LOWER_IS_BETTER else "higher"
    lines += ["", f"{main}: {arrow} is better. Metrics of the final model of each run (no checkpoint "
              "picked on the test set), mean ± std over seeds. Train: wall-clock minutes of a run's "
              "training loop (validation included), median over seeds, on the machine that ran it. CPU ms: "
              "median of 10 forward passes of one image on one CPU thread, timed as the report is written. "
              + SIGNIFICANCE_RULE + (GAP_NOTE if has_gap else ""), *(["", *notes] if notes else [])]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out: Path, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    # one value per cell: the loss terms (a mapping per row) are in the JSON and the markdown only
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]
    keys = list(dict.fromkeys(k for r in flat for k in r))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(flat)


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


def make_plots(cc: CompareConfig, rows: list[dict[str, Any]], configs: dict[str, Config], kept: dict[str, Config],
               models: dict[str, torch.nn.Module], task: str, main: str) -> list[Path]:
    """Bar chart, training curves, qualitative grid, and (binary) PR and F-threshold curves.
    ``configs``: one finished run of each entry, by entry name (its training curve); ``kept``: the
    entries with a checkpoint and its run's config, whose models (in ``models``) are trained: only
    they are in the prediction figures."""
    out = cc.output_dir
    written = [
        plots.plot_metric_bars({r["method"]: (r[main], r.get(f"{main}_std")) for r in rows}, main,
                               out / f"bars_{main}.png"),
        plots.plot_training_curves({name: _history(cfg.run_dir, main) for name, cfg in configs.items()},
                                   out / "training_curves.png", metric_name=main),
    ]
    if not kept:  # no trained model: an earlier report's prediction figures would show stale entries
        for name in ("qualitative.png", "pr_curves.png", "f_threshold.png"):
            (out / name).unlink(missing_ok=True)
        return written
    first = next(iter(kept.values()))
    dataset = build_dataset(first.data, task, "val")
    samples = dataset.samples[: cc.qualitative_images]
    palette = layout_palette(first.data.layout)  # Cityscapes' colours for Cityscapes, as its saved predictions

    def shown(label: np.ndarray) -> np.ndarray:
        if task == "binary":
            return label if label.max() > 1 else (label * 255).astype(np.uint8)
        return colorize_labels(label, first.data.num_classes, palette)

    grid = [{"name": s.name, "image": read_image(s.image), "ground truth": shown(_read_mask(s.mask, task, dataset))}
            for s in samples]
    curves: dict[str, dict[str, Any]] = {}
    for name, cfg in kept.items():
        pred_dir = out / "predictions" / name
        device = next(models[name].parameters()).device
        metrics = evaluate_with_config(models[name], dataset, cfg, device, save_dir=pred_dir,
                                       return_curves=task == "binary")
        if task == "binary":
            curves[name] = metrics["curves"]
        for row, sample in zip(grid, samples):
            row[name] = shown(np.array(Image.open(pred_dir / f"{sample.name}.png")))
    written.append(plots.plot_qualitative_grid(grid, ["image", "ground truth", *kept], out / "qualitative.png"))
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


__all__ = ["SIGNIFICANCE_RULE", "format_markdown", "significance", "summarise", "write_report"]
