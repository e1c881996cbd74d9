"""What a comparison's self-distillation heads had to teach: each head's score beside the output's."""
from __future__ import annotations

import statistics

from segkd.commands.compare_config import CompareConfig, Results


def head_scores(cc: CompareConfig, results: Results, main: str) -> dict[str, dict[str, float]]:
    """``{entry: {"out": value, "method/head": value, ...}}``: ``main`` of the output and of each head
    a run scored at its end (metrics.json ``heads``), the mean over the entry's finished seeds; only
    entries whose runs have heads."""
    scores = {}
    for entry in cc.entries:
        runs = [r for r in results[entry.name].values() if r.get("heads")]
        if runs:
            names = dict.fromkeys(name for r in runs for name in r["heads"])
            scores[entry.name] = {"out": statistics.fmean(r["student"][main] for r in runs),
                                  **{n: statistics.fmean(r["heads"][n][main] for r in runs if n in r["heads"])
                                     for n in names}}
    return scores


def format_heads(scores: dict[str, dict[str, float]], main: str, baseline: tuple[str, float] | None = None) -> str:
    """The heads table; ``baseline`` (name, mean ``main``) is the network trained alone, the bar a head must
    pass to hold anything the output could not have learnt without it."""
    if not scores:
        return ""
    bar = (f" The baseline ({baseline[0]}, trained alone) scores {baseline[1]:.4f}: a head no better than it has "
           "nothing beyond it to teach." if baseline else "")
    lines = ["", f"Prediction heads of the self-distillation methods: {main} of the student's output and of each "
             "head the method trains, scored alike on the same images at the end of training, mean over seeds "
             f"(a diagnostic: no model is picked on it).{bar}", "",
             "| method | out | heads |", "|---|---|---|"]
    for name, values in scores.items():
        heads = " · ".join(f"{head.split('/', 1)[-1]} {value:.4f}" for head, value in values.items() if head != "out")
        lines.append(f"| {name} | {values['out']:.4f} | {heads} |")
    return "\n".join(lines) + "\n"


__all__ = ["format_heads", "head_scores"]
