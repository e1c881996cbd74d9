"""Checkpoints: written atomically, validated on load with messages that say what is wrong.

Every checkpoint is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists
and dicts only, so opening a file someone shared cannot run code it carries. A file that needs
more is refused, naming what it holds, unless the user trusts it (``--trust-checkpoint``,
``SEGKD_TRUST_CHECKPOINT=1`` or ``trust=True``).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkd.io import atomic_torch_save
from segkd.models.weights import describe_mismatch

CHECKPOINT_FORMAT = "segkd-checkpoint-v1"


TRUST_HINT = ("if you trust the file's source, pass --trust-checkpoint "
              "(environment: SEGKD_TRUST_CHECKPOINT=1; Python: trust=True)")

# Checkpoints of segkd 0.1 kept NumPy's RNG state as an array: exactly what rebuilds a plain
# array is allowed, nothing that calls code.
_NUMPY_ARRAY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
_trust = {"enabled": False}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the model at hand."""


def trust_checkpoints(enabled: bool = True) -> None:
    """Let every later load in this process unpickle arbitrary objects (``--trust-checkpoint``)."""
    _trust["enabled"] = enabled


def trusted(trust: bool | None = None) -> bool:
    """``trust`` when given, else the process-wide setting or ``SEGKD_TRUST_CHECKPOINT=1``."""
    if trust is not None:
        return trust
    return _trust["enabled"] or os.environ.get("SEGKD_TRUST_CHECKPOINT", "") not in ("", "0")


def _load(path: Path, trust: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:  # not an object it refused: the bytes are no pickle at all
            raise CheckpointError(
                f"{path}: not a readable PyTorch file (corrupt, truncated or another format)") from None
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        what = f" ({found.group(1)})"
        raise CheckpointError(
            f"{path}: holds Python objects beyond tensors and plain values{what}, and opening it could run "
            f"code it carries; refused. {TRUST_HINT}"
        ) from None


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write a checkpoint atomically; a failed write (full disk) names the file it was writing."""
    try:
        atomic_torch_save(obj, path)
    except OSError as err:
        if err.filename is None:  # errors of write() itself carry no file name
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def read_checkpoint(path: str | Path, trust: bool | None = None) -> dict[str, Any]:
    """Load a file written by segkd; a plain state dict is returned as ``{"model": state_dict}``.

    Only tensors and plain values are unpickled unless ``trust`` (default: the process-wide
    setting, see :func:`trusted`); a file that needs more raises :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = _load(path, trusted(trust))
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"{path}: not a readable PyTorch file ({err})") from err
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return {"model": obj[key]}
    raise CheckpointError(f"{path}: neither a segkd checkpoint nor a state dict")


# What a finished run needs to be used (as a teacher, for evaluation, prediction or export) but not
# to be resumed: its optimizer and RNG states are dropped
WEIGHTS_ONLY_KEYS = ("format", "config", "model", "methods", "iteration", "best", "train_seconds")


def keep_weights_only(path: str | Path) -> bool:
    """Rewrite the finished run's checkpoint ``path`` (atomically) without what only a resume needs,
    about half its size; the model's weights are kept exactly. Returns whether it was rewritten
    (False for a file that holds weights only already)."""
    ckpt = read_checkpoint(path)
    if not set(ckpt) - set(WEIGHTS_ONLY_KEYS):
        return False
    atomic_save({k: v for k, v in ckpt.items() if k in WEIGHTS_ONLY_KEYS}, path)
    return True


def remap_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename key prefixes (``{"module.": ""}`` strips DataParallel's prefix)."""
    if not key_map:
        return state
    out = {}
    for key, value in state.items():
        for old, new in key_map.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load with an error that lists what does not fit (wrong checkpoint for this model)."""
    problems = describe_mismatch(state, model.state_dict())
    if problems:
        raise CheckpointError(f"{source}: this checkpoint does not fit {type(model).__name__}: {problems}")
    model.load_state_dict(state, strict=False)  # describe_mismatch checked every key
