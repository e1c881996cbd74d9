"""``segkd compare``: the same budget and seeds for a list of methods, one honest table.

The command in three modules, imported one way (config <- runner, config <- report):
``compare_config`` (the schema, loading, and each (entry, seed)'s run config), ``compare_runner``
(what is finished or stale, and training the rest) and ``compare_report`` (statistics,
significance, tables and plots). This module runs them in turn.
"""
from __future__ import annotations

from typing import Any

from segkd.commands.compare_config import (
    CompareConfig,
    CompareEntry,
    load_compare_config,
    run_configs,
    runs_of,
    validate_compare,
)
from segkd.commands.compare_report import format_markdown, summarise, write_report
from segkd.commands.compare_runner import train_all
from segkd.config import ConfigError
from segkd.data.build import resolve_root
from segkd.engine.errors import NonFiniteLossError


class RunsDiverged(NonFiniteLossError):
    """Runs of a comparison that diverged; every other run was trained and reported."""


def compare(cc: CompareConfig, log=print, retrain: bool = False, report_only: bool = False,
            only: list[str] | None = None) -> dict[str, Any]:
    """Train what is missing, then write ``results.{md,csv,json}`` and the plots.

    ``retrain``: train again (moving the old run aside) every run whose stored config differs.
    ``report_only``: train nothing; the tables and plots show the runs finished so far.
    ``only``: train these entries alone (and those they wait for); the tables show every finished run.
    """
    configs = run_configs(cc)  # read and validated once, for the runner and the report
    first = next(iter(configs.values()))
    resolve_root(first.data, first.task)  # a missing data set stops the comparison before any run
    trained = train_all(cc, log, retrain, report_only, configs=configs, only=only)  # matched entries at their epochs
    if not trained.diverged:
        try:
            return write_report(cc, trained.configs, trained.results)
        except ConfigError as err:
            if only is None:
                raise
            # rows trained alone: the table may wait for runs of other rows (the baseline's)
            return {"rows": [], "figures": [], "markdown": f"{', '.join(only)}: trained; no table yet: {err}"}
    try:
        write_report(cc, trained.configs, trained.results)
        tables = "the other runs are trained and in the tables"
    except ConfigError as err:  # e.g. a diverged baseline leaves no table to write
        tables = f"the other runs are trained, but no table was written ({err})"
    raise RunsDiverged(f"{len(trained.diverged)} run(s) did not finish: {'; '.join(trained.diverged)}; {tables}; "
                       "lower optim.lr for those entries (a new config trains them again), or run the same "
                       "command to try them again")


__all__ = ["CompareConfig", "CompareEntry", "compare", "format_markdown", "load_compare_config", "run_configs",
           "runs_of", "summarise", "train_all", "validate_compare"]
