"""Keeping a run folder honest: resume only the same config, no stale files, no diverged weights.

Small helpers the trainer and ``segkd compare`` call; none of them trains anything.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from segkd.config import Config, ConfigError
from segkd.data.build import split_file_name
from segkd.distill.options import method_values
from segkd.engine.checkpoint import read_checkpoint

# Config keys that cannot change a run's result: where it is written, how it is logged, how many
# loader processes feed it and which device runs it. Every other key must match to resume.
RESULT_NEUTRAL = frozenset({
    "name", "output_dir", "train.log_every", "train.progress", "train.device", "data.num_workers",
    "train.checkpoint_every_iters",
})
# Weights beyond this are taken as diverged even when finite: a normalised network trained in
# fp32 never comes near, while a run about to produce NaN (2.7e20 seen) has passed it.
DIVERGED_MAGNITUDE = 1e10
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")  # segkd.io.atomic_output's temporary files


class ResumeError(ConfigError):
    """``--resume`` with a config that differs from the stored one in a result-changing key."""


class RunFolderError(FileExistsError):
    """A run folder that another live run holds, or that holds results a start would replace."""


RESULT_FILES = ("best.pt", "metrics.json")  # what a run leaves that is worth keeping


@contextlib.contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (``.lock``, with the holder's process id) while training.

    Raises:
        RunFolderError: another live process holds it; the message names that process.
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: train unguarded
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / ".lock"
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunFolderError(
                f"{run_dir} is in use by another training (process {holder}); wait for it to end, "
                "or choose another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       ignore: frozenset[str] = RESULT_NEUTRAL) -> list[str]:
    """``"key: old → new"`` for every result-changing key that differs (sorted)."""
    a, b = flatten(old), flatten(new)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            lines.append(f"{key}: {show(va)} → {show(vb)}")
    return lines


def normalised(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config as this version of segkd resolves it (defaults of keys added since filled
    in, keys a task does not use dropped), so that only real differences show; as is when it no
    longer validates."""
    try:
        return Config.model_validate(stored).to_dict()
    except Exception:  # noqa: BLE001 - an old or broken config is compared key by key instead
        return stored


def methods_as_built(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each ``distill.methods`` entry by what it builds (``method_values``): an option
    under its older name, or restating its default, is no change to a run."""
    distill = config.get("distill")
    if not isinstance(distill, dict) or not isinstance(distill.get("methods"), list):
        return config
    return {**config, "distill": {**distill, "methods": [_method_as_built(spec) for spec in distill["methods"]]}}


def _method_as_built(spec: Any) -> Any:
    try:
        return method_values(spec)
    except Exception:  # noqa: BLE001 - a method or option this version lacks is compared as written
        return spec


def run_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``config_differences`` between the config a run was trained with and ``current``, both as this
    version resolves and builds them (``normalised``, ``methods_as_built``): the one comparison that
    decides whether a run folder may be resumed or reused."""
    return config_differences(methods_as_built(normalised(stored)), methods_as_built(current))


def check_resume(cfg: Config, last_path: Path) -> dict[str, Any]:
    """The checkpoint to resume from, after checking that ``cfg`` matches the one it was trained with.

    Raises:
        ResumeError: a result-changing key differs; the message lists each one.
    """
    ckpt = read_checkpoint(last_path)
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise ResumeError(f"{last_path}: holds no config, so a resume cannot be checked; start a new output_dir")
    if "optimizer" not in ckpt:  # a finished run kept as weights only (a comparison's teacher)
        raise ResumeError(f"{last_path}: holds the finished run's weights only (no optimizer state), so it cannot "
                          "be resumed; train into another output_dir, or use it as it is (evaluate, predict, teacher)")
    diffs = run_changes(stored, cfg.to_dict())
    if diffs:
        shown = "; ".join(diffs[:10]) + (f"; ... ({len(diffs) - 10} more)" if len(diffs) > 10 else "")
        raise ResumeError(
            f"{last_path}: cannot resume with a changed config ({shown}). Resume with the stored "
            f"config ({last_path.parent / 'config.yaml'}), or train into another output_dir. Only "
            f"{', '.join(sorted(RESULT_NEUTRAL))} may change on resume."
        )
    return ckpt


def prepare_run_dir(run_dir: Path, resumed_iteration: int | None) -> list[Path]:
    """Remove what a killed run left behind; returns the removed paths.

    Temporary checkpoint files of processes no longer alive go. On resume, ``history.jsonl`` is
    cut back to the resumed iteration so no iteration is logged twice; on a fresh start the
    history of a run that never checkpointed is removed. Results are never removed.

    Raises:
        RunFolderError: a fresh start (or a resume with no ``last.pt``) into a folder that holds
            ``best.pt`` or ``metrics.json``.
    """
    if resumed_iteration is None:
        results = [name for name in RESULT_FILES if (run_dir / name).exists()]
        if results:
            raise RunFolderError(
                f"{run_dir} holds the results of an earlier run ({', '.join(results)}) but no last.pt to "
                "resume from; starting here would replace them. Move or delete them to start over, "
                "or choose another output_dir"
            )
    removed = []
    for path in run_dir.glob(".*.tmp"):
        match = _TMP_NAME.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    history = run_dir / "history.jsonl"
    if resumed_iteration is None:
        if history.exists():
            history.unlink()
            removed.append(history)
    elif history.is_file():
        kept = [line for line in history.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= resumed_iteration]
        history.write_text("".join(line + "\n" for line in kept))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def state_problems(state: Mapping[str, Any]) -> list[str]:
    """Names of a state dict's floating-point tensors that are not finite or beyond ``DIVERGED_MAGNITUDE``
    (e.g. a checkpoint's ``"model"``), each with its largest |w|."""
    bad = []
    for name, tensor in state.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point() or tensor.numel() == 0:  # extra state
            continue
        largest = tensor.detach().abs().max().item()
        if not math.isfinite(largest) or largest > DIVERGED_MAGNITUDE:
            bad.append(f"{name} (max |w| {largest:.3g})")
    return bad


def selects_on_test(cfg: Config) -> bool:
    """Whether the validation data is the test split (a binary set without a validation split).

    A model must not be picked on the data it is reported on, so such runs keep the last model.
    """
    return split_file_name(cfg.data, cfg.task, "val").lower() == "test"


def describe_last_checkpoint(last: dict[str, Any] | None, path: Path) -> str:
    """A sentence on the last checkpoint for a stop message: its iteration and whether it is finite."""
    if last is None:
        return f"no checkpoint was written yet ({path} does not hold this run)"
    state = "finite weights" if last["finite"] else "NON-FINITE weights: do not resume from it"
    return f"the last checkpoint {path} is from iteration {last['iteration']} ({state})"

