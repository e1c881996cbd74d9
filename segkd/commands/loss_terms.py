"""The balance of a comparison's loss terms: what each method adds beside the task loss, and how much."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from segkd.commands.compare_config import CompareConfig, Results, RunConfigs


def loss_terms(cc: CompareConfig, configs: RunConfigs, results: Results) -> dict[str, dict[str, float]]:
    """``{entry: {term: value}}``: each logged loss term (as weighted in the total) near the end of
    training, the mean over the last tenth of each finished run's logged iterations, then over seeds."""
    terms = {}
    for entry in cc.entries:
        per_seed = [t for seed in results[entry.name] if (t := _final_terms(configs[(entry.name, seed)].run_dir))]
        if per_seed:
            names = dict.fromkeys(k for t in per_seed for k in t)
            terms[entry.name] = {k: statistics.fmean(t[k] for t in per_seed if k in t) for k in names}
    return terms


def _final_terms(run_dir: Path) -> dict[str, float]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return {}
    logged = [rec["train"] for rec in map(json.loads, path.read_text().splitlines()) if "train" in rec]
    tail = logged[-max(1, len(logged) // 10):]
    return {k: statistics.fmean(r[k] for r in tail if k in r) for k in dict.fromkeys(k for r in tail for k in r)}


def format_terms(terms: dict[str, dict[str, float]]) -> str:
    """The balance of each entry's loss terms: what a method adds beside the task loss, and how much."""
    if not terms:
        return ""
    lines = ["", "Loss terms at the end of training: each as weighted in the total, the mean over the last "
             "tenth of the logged training iterations and over seeds, its share of the total in brackets.", "",
             "| method | terms | total |", "|---|---|---|"]
    for name, values in terms.items():
        total = values.get("total")
        parts = [f"{k} {v:.4g}" + (f" ({_percent(v / total)})" if total else "")
                 for k, v in values.items() if k != "total"]
        lines.append(f"| {name} | {' · '.join(parts)} | {'-' if total is None else f'{total:.4g}'} |")
    return "\n".join(lines) + "\n"


def _percent(share: float) -> str:
    """A share of the total as a percentage, small ones with their digits (a term of 0.07 % is not 0)."""
    return f"{100 * share:.0f} %" if abs(share) >= 0.01 else f"{100 * share:.2g} %"


__all__ = ["format_terms", "loss_terms"]
