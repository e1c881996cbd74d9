"""A comparison's runs seed by seed, and each row's gain paired with the baseline's run of the same seed.

Runs of the same seed share their initialisation of the parts they have in common and the order of
their data, so the difference of two runs of one seed varies less than two runs of different seeds
(the paired view a per-seed table invites). The table's verdict stays the stated unpaired rule; the
paired figures stand beside it as information.
"""
from __future__ import annotations

import math
import statistics

from segkd.commands.compare_config import CompareConfig, Results
from segkd.engine.determinism import describe_machine


def per_seed(cc: CompareConfig, results: Results, main: str) -> dict[str, dict[int, float]]:
    """``{entry: {seed: main}}`` of every finished run, in the comparison's order."""
    return {e.name: {seed: run["student"][main] for seed, run in sorted(results[e.name].items())}
            for e in cc.entries if results[e.name]}


def paired_gain(row: dict[int, float], base: dict[int, float]) -> tuple[float | None, float | None, int]:
    """(mean, 2 SE, n) of row − baseline over the seeds both ran: the mean of the same-seed
    differences and twice its standard error, 2·s_d/sqrt(n) (None without a common seed, and the
    2 SE None below two)."""
    diffs = [row[seed] - base[seed] for seed in row if seed in base]
    if not diffs:
        return None, None, 0
    spread = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return statistics.fmean(diffs), spread, len(diffs)


def paired_gains(values: dict[str, dict[int, float]], baseline: str,
                 unpaired: frozenset[str] = frozenset()) -> dict[str, tuple[float | None, float | None, int]]:
    """``paired_gain`` of every row against ``baseline`` (none while the baseline has no run); the
    baseline and the ``unpaired`` rows (teachers, trained on their own data and config) get none."""
    if baseline not in values:
        return {}
    return {name: paired_gain(runs, values[baseline]) for name, runs in values.items()
            if name != baseline and name not in unpaired}


def format_per_seed(values: dict[str, dict[int, float]], paired: dict[str, tuple[float | None, float | None, int]],
                    baseline: str, main: str) -> str:
    """The per-seed table of ``values`` with the ``paired`` gains (``paired_gains``); none while the
    baseline has no run."""
    if baseline not in values:
        return ""
    seeds = sorted({seed for runs in values.values() for seed in runs})
    lines = ["", f"{main} per seed, and each row's gain paired with the baseline's run of the same seed: the mean of "
             "the same-seed differences over the seeds both ran and twice its standard error, 2·s_d/sqrt(n) "
             "(information beside the table's rule, which stays the one above).", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | paired gain | 2 SE (paired) | common seeds |",
             "|---|" + "---|" * (len(seeds) + 3)]
    for name, runs in values.items():
        cells = [f"{runs[s]:.4f}" if s in runs else "-" for s in seeds]
        mean, spread, n = paired.get(name, (None, None, None))
        cells += [f"{mean:+.4f}" if mean is not None else "-", f"{spread:.4f}" if spread is not None else "-",
                  str(n) if n is not None else "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_machines(cc: CompareConfig, results: Results) -> str:
    """Where the runs were trained. The same seed gives other floats on another processor, thread
    count or torch version, so runs from several set-ups are named, with the entries of each."""
    entries_on: dict[str, list[str]] = {}
    for entry in cc.entries:
        for run in results[entry.name].values():
            names = entries_on.setdefault(describe_machine(run.get("machine")), [])
            if entry.name not in names:
                names.append(entry.name)
    if len(entries_on) < 2:
        return "".join(f"\nTrained on: {machine}.\n" for machine in entries_on)
    lines = [f"\nTrained on {len(entries_on)} set-ups (the same seed gives other floats on each, so runs of one seed "
             "on different set-ups do not share their floats):"]
    lines += [f"- {machine}: {', '.join(names)}" for machine, names in entries_on.items()]
    return "\n".join(lines) + "\n"


__all__ = ["format_machines", "format_per_seed", "paired_gain", "paired_gains", "per_seed"]
