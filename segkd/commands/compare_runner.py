"""Training a comparison's runs: what is finished, what is stale, and the rest trained (side by side or not).

Each (entry, seed) trains into ``output_dir/entry/seedN``; finished runs are reused and
interrupted ones resumed, so running the command again continues where it stopped. A run whose
stored config differs from the one the comparison now resolves is never reused (``--retrain``).
A ``matched_time`` entry's runs wait for every run of the entries it is timed by and are resolved when they start;
one trained before a run of theirs was added is judged then: reused if its epochs come out the same.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from segkd.commands.compare_config import (
    CompareConfig,
    CompareEntry,
    Matched,
    Results,
    RunConfigs,
    matched_config,
    matched_epochs,
    metric_columns,
    run_configs,
    runs_of,
    with_matched,
)
from segkd.config import Config, ConfigError
from segkd.engine.checkpoint import keep_weights_only
from segkd.engine.errors import NonFiniteLossError, TrainingInterrupted
from segkd.engine.resume import run_changes
from segkd.engine.teacher_cache import fill_ahead
from segkd.engine.trainer import RESUME_HINT, fit

StaleRuns = dict[tuple[str, int], list[str]]
"""``{(entry, seed): differing keys}``"""


class Trained(NamedTuple):
    """What ``train_all`` leaves: every run's config (a ``matched_time`` entry's at the epochs its runs
    trained for) and the metrics of every finished run."""

    configs: RunConfigs
    results: Results
    diverged: tuple[str, ...] = ()  # "entry seed N: why" of each run that diverged (or waited for one)


def stored_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run directory was trained with (``config.yaml``), if any."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    stored = yaml.safe_load(path.read_text())
    return stored if isinstance(stored, dict) else None


def stale_runs(cc: CompareConfig, matched: Matched | None = None) -> StaleRuns:
    """The run directories trained with another config than ``matched`` (``with_matched``; default: worked
    out from ``cc``).

    A student whose teacher entry is stale is stale too: its teacher would be retrained; so is a
    ``matched_time`` entry whose entries are. A matched entry still waiting for its epochs is judged
    when they are known (when its runs start), not here.
    """
    configs, waiting = matched if matched is not None else with_matched(cc, run_configs(cc))
    stale: StaleRuns = {}
    stale_entries: set[str] = set()
    for entry, seed in runs_of(cc):
        cfg = configs[(entry.name, seed)]
        stored = stored_config(cfg.run_dir)
        if stored is None:
            continue
        diffs = [] if entry.name in waiting else run_changes(stored, cfg.to_dict())
        # a teacher, or a matched entry's entries
        diffs += [f"entry '{name}', which it waits for, is retrained" for name in waits_for(cc, entry)
                  if name in stale_entries]
        if diffs:
            stale[(entry.name, seed)] = diffs
            stale_entries.add(entry.name)
    return stale


def finished_runs(cc: CompareConfig, stale: StaleRuns, log=print, matched: Matched | None = None) -> Results:
    """The metrics of the runs finished with the current config; says which are left out.
    ``matched``: as ``with_matched`` gives it (default: worked out from ``cc``)."""
    configs, waiting = matched if matched is not None else with_matched(cc, run_configs(cc))
    results: Results = {entry.name: {} for entry in cc.entries}
    for entry, seed in runs_of(cc):
        done = configs[(entry.name, seed)].run_dir / "metrics.json"
        if (entry.name, seed) in stale:
            log(f"[{entry.name} seed {seed}] trained with another config, left out")
        elif entry.name in waiting and done.is_file():
            log(f"[{entry.name} seed {seed}] its epochs wait for unfinished runs of "
                f"{' or '.join(map(repr, waits_for(cc, entry)))}, left out")
        elif done.is_file():
            results[entry.name][seed] = json.loads(done.read_text())
        else:
            log(f"[{entry.name} seed {seed}] not finished, left out")
    return results


def train_all(cc: CompareConfig, log=print, retrain: bool = False, report_only: bool = False,
              configs: RunConfigs | None = None, only: list[str] | None = None) -> Trained:
    """Train every (entry, seed) not finished yet; return every run's config and metrics.

    A run directory trained with another resolved config is never reused: the comparison stops
    and lists the differing keys, or with ``retrain`` the old run is moved aside and trained again.
    A ``matched_time`` entry whose epochs are not known yet is judged so when its runs start.
    ``report_only``: train nothing; return the runs finished with the current config.
    ``configs``: the runs as ``run_configs(cc)`` resolves them (resolved here when not given).
    ``only``: train these entries alone (and those they wait for); the others' runs are reported as they are.
    """
    matched = with_matched(cc, configs if configs is not None else run_configs(cc))
    configs, waiting = matched
    stale = stale_runs(cc, matched)
    if report_only:
        return Trained(configs, finished_runs(cc, stale, log, matched))
    chosen = _with_awaited(cc, only) if only is not None else {e.name for e in cc.entries}
    left_alone = {run: diffs for run, diffs in stale.items() if run[0] not in chosen}  # left out of the tables
    stale = {run: diffs for run, diffs in stale.items() if run[0] in chosen}
    orphaned = sorted({name for name, _ in left_alone if {n for n, _ in stale} & set(waits_for(cc, cc.entry(name)))})
    if retrain and orphaned:  # they would stay, distilled from (or matched to) runs trained again here
        raise ConfigError(f"--only with --retrain: the runs of {', '.join(orphaned)} wait for entries retrained "
                          f"here; add {', '.join(orphaned)} to --only")
    if stale and not retrain:
        raise _refusal(cc, stale)
    retrained = {name for name, _ in stale}
    todo: list[Run] = []
    for entry, seed in runs_of(cc):
        if entry.name not in chosen:
            continue
        cfg = configs[(entry.name, seed)]
        if (entry.name, seed) in stale:
            log(f"[{entry.name} seed {seed}] config changed, old run moved to {_set_aside(cfg.run_dir)}")
        if entry.matched_time is not None and (entry.name in waiting or retrained.intersection(waits_for(cc, entry))):
            # its epochs follow runs trained below: resolved, and the run judged, when it starts
            resolve = _resolver(cc, entry, seed, configs, retrain, log)
            todo.append(Run(entry.name, seed, cfg, waits_for(cc, entry), resolve))
        elif (cfg.run_dir / "metrics.json").is_file():
            log(f"[{entry.name} seed {seed}] finished earlier with the same config, reused")
        else:
            todo.append(Run(entry.name, seed, cfg, waits_for(cc, entry)))
    # in the config's order, which puts every entry after those it waits for (validated): a student
    # trains while its teacher's checkpoint is here, however long the study
    keep_teacher_weights(cc, configs, log)  # those finished before
    diverged = train_runs(todo, cc.jobs, log)
    keep_teacher_weights(cc, configs, log)
    trained = {**configs, **{(run.name, run.seed): run.cfg for run in todo}}
    # stale ones trained again; an entry not chosen may still wait for runs of another, and a matched run
    # skipped for a diverged run was never resolved: a metrics.json of its earlier epochs is not reported
    unresolved = {run.name for run in todo if run.resolve is not None}
    results = finished_runs(cc, left_alone, log, Matched(trained, frozenset((waiting - chosen) | unresolved)))
    return Trained(trained, results, tuple(diverged))


def _with_awaited(cc: CompareConfig, only: list[str]) -> set[str]:
    """The entries ``only`` names and, recursively, those they wait for."""
    names = [e.name for e in cc.entries]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ConfigError(f"--only {unknown[0]}: {cc.name} has no such entry; its entries: {', '.join(names)}")
    chosen, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(waits_for(cc, cc.entry(name)))
    return chosen


def keep_teacher_weights(cc: CompareConfig, configs: RunConfigs, log=print) -> None:
    """Keep each finished teacher run (the run a ``teacher_from`` entry distils from) as weights only:
    its ``last.pt`` without the optimizer state, half the size, so a study kept as records can keep its
    teachers beside them and train its students on another machine (results/README.md)."""
    teachers = dict.fromkeys((e.teacher_from, cc.teacher_seed_of(e)) for e in cc.entries if e.teacher_from is not None)
    for name, seed in teachers:
        run_dir = configs[(name, seed)].run_dir
        if (run_dir / "metrics.json").is_file() and (run_dir / "last.pt").is_file() \
                and keep_weights_only(run_dir / "last.pt"):
            size = (run_dir / "last.pt").stat().st_size / 2**20
            log(f"[{name} seed {run_dir.name.removeprefix('seed')}] a teacher: last.pt kept as weights only "
                f"(no optimizer state), {size:.0f} MiB")


def _refusal(cc: CompareConfig, stale: StaleRuns) -> ConfigError:
    """The error a comparison stops with when runs there were trained with another config."""
    listed = "\n".join(f"  {name} seed {seed}: {'; '.join(diffs[:5])}" for (name, seed), diffs in stale.items())
    return ConfigError(
        f"{len(stale)} finished or started run(s) under {cc.output_dir} were trained with another "
        f"config; rerun with --retrain to train them again (the old runs are kept beside them), "
        f"or choose another output_dir:\n{listed}"
    )


def _set_aside(run_dir: Path) -> Path:
    """Move a stale run directory out of the way (kept, not deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    run_dir.rename(target)
    return target


def waits_for(cc: CompareConfig, entry: CompareEntry) -> tuple[str, ...]:
    """The entries whose runs must all finish before a run of ``entry`` starts."""
    if entry.matched_time is not None:
        match = entry.matched_time
        teacher = cc.entry(match.of).teacher_from if match.with_teacher else None
        return tuple(dict.fromkeys(n for n in (match.of, match.from_, teacher) if n is not None))
    return (entry.teacher_from,) if entry.teacher_from is not None else ()


def _resolver(cc: CompareConfig, entry: CompareEntry, seed: int, configs: RunConfigs, retrain: bool,
              log=print) -> Callable[[], tuple[Config, bool]]:
    """A matched run's config at the epochs its entries' times give once their runs are done, and
    whether to train it: a run there already is reused when trained with that config, else moved aside
    (``retrain``) or the comparison stops, as for a run stale from the start."""
    def resolve() -> tuple[Config, bool]:
        epochs = matched_epochs(cc, entry, configs)
        if epochs is None:  # its entries' runs were trained or reused just before: never expected
            raise ConfigError(f"{cc.name}: entry '{entry.name}': a run of "
                              f"{' or '.join(map(repr, waits_for(cc, entry)))} has no metrics.json; "
                              "run segkd compare again")
        cfg = matched_config(cc, entry, seed, configs, epochs)
        stored = stored_config(cfg.run_dir)
        diffs = run_changes(stored, cfg.to_dict()) if stored is not None else []
        if diffs and not retrain:
            raise _refusal(cc, {(entry.name, seed): diffs})
        if diffs:
            log(f"[{entry.name} seed {seed}] config changed, old run moved to {_set_aside(cfg.run_dir)}")
        elif (cfg.run_dir / "metrics.json").is_file():
            log(f"[{entry.name} seed {seed}] finished earlier with the same config ({epochs} epochs), reused")
            return cfg, False
        return cfg, True

    return resolve


@dataclass
class Run:
    """One (entry, seed) to train; ``waits_for``: the entries whose runs must finish before it starts;
    ``resolve``: its config, known only then (a ``matched_time`` entry)."""

    name: str
    seed: int
    cfg: Config
    waits_for: tuple[str, ...] = ()
    resolve: Callable[[], tuple[Config, bool]] | None = None

    def ready(self) -> bool:
        """Whether to train it: ``cfg`` resolved now that the runs it waits for are done; False for a run
        finished earlier with that config."""
        if self.resolve is None:
            return True
        (self.cfg, train), self.resolve = self.resolve(), None
        return train


class _Outcomes:
    """What becomes of each run: the log lines, and the runs that diverged or waited for one that did."""

    def __init__(self, log) -> None:
        self.log, self.diverged, self.failed, self.not_trained = log, [], set(), set()

    def skipped(self, run: Run) -> bool:
        # a diverged entry named first: it is the cause
        blocked = sorted((self.failed | self.not_trained).intersection(run.waits_for),
                         key=lambda name: (name not in self.failed, name))
        if blocked:  # its entry is incomplete now: the runs waiting for it (a matched entry's) are skipped too
            self.not_trained.add(run.name)
            why = "diverged" if blocked[0] in self.failed else "was not trained: it waits for a run that diverged"
            self.diverged.append(f"{run.name} seed {run.seed}: waits for '{blocked[0]}', which {why}")
            self.log(f"[{run.name} seed {run.seed}] not trained: a run of '{blocked[0]}' {why}")
        return bool(blocked)

    def started(self, run: Run) -> None:
        self.log(f"[{run.name} seed {run.seed}] {'resuming' if _resumes(run.cfg) else 'training'} → {run.cfg.run_dir}")

    def ended(self, run: Run, fitted: Callable[[], dict[str, Any]]) -> None:
        """Log the end of ``run`` (``fitted()`` gives its report); a divergence is recorded, not raised."""
        try:
            report = fitted()
        except NonFiniteLossError as err:
            self.failed.add(run.name)
            self.diverged.append(f"{run.name} seed {run.seed}: {str(err).split(':', 1)[0]}")
            self.log(f"[{run.name} seed {run.seed}] diverged, the comparison goes on without it: {err}")
            return
        main = metric_columns(run.cfg.task)[0]
        self.log(f"[{run.name} seed {run.seed}] done: {main} {report['student'].get(main, float('nan')):.4f}, "
                 f"{report.get('train_seconds', float('nan')):.0f} s of training")


def train_runs(runs: list[Run], jobs: int, log=print) -> list[str]:
    """Train ``runs``, ``jobs`` at once; each process gets an equal share of the cores as threads
    (two runs on two cores: one thread each, as ``OMP_NUM_THREADS=1`` gives). A run starts once
    its teacher entry's runs are done, its teacher cache filled first (once, in this process).

    A run that diverges (a non-finite loss or weights) does not stop the others: it keeps its last
    good checkpoint, the runs waiting for its entry are skipped, and ``"entry seed N: why"`` of each
    is returned, so that a long comparison trains all it can before it reports them."""
    outcomes = _Outcomes(log)
    if jobs == 1 or len(runs) <= 1:
        for run in runs:  # in order: an entry comes after those it waits for
            if outcomes.skipped(run) or not run.ready():
                continue
            outcomes.started(run)
            outcomes.ended(run, lambda run=run: _fit_in_worker(run.cfg))
    else:
        _side_by_side(runs, jobs, outcomes)
    return outcomes.diverged


def _side_by_side(runs: list[Run], jobs: int, outcomes: _Outcomes) -> None:
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
            ready = [r for r in waiting if not busy.intersection(r.waits_for)]
            for run in ready:  # started when a process is free for it
                if len(running) >= jobs:
                    break
                waiting.remove(run)
                if outcomes.skipped(run) or not run.ready():
                    continue
                cache = run.cfg.distill.teacher.cache if run.cfg.distill.teacher is not None else None
                if cache is not None and cache not in filled:  # shared by runs side by side: fill it once
                    filled.add(cache)
                    fill_ahead(run.cfg)
                outcomes.started(run)
                running[pool.submit(_fit_in_worker, run.cfg)] = run
            if not running:  # every run ready was reused: look again at those waiting
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes.ended(running.pop(future), future.result)


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
    """``fit`` the run, resuming it when it has a checkpoint; a stopped run says how compare goes on."""
    try:
        return fit(cfg, resume=_resumes(cfg))
    except TrainingInterrupted as err:  # segkd compare has no --resume: it resumes by itself
        message = str(err).removesuffix(RESUME_HINT)
        raise TrainingInterrupted(f"{message}run the same segkd compare command again to continue") from None


__all__ = ["Trained", "finished_runs", "keep_teacher_weights", "stale_runs", "train_all", "train_runs"]
