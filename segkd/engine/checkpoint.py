"""Checkpoints: written atomically, validated on load with messages that say what is wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.io import atomic_torch_save
from segkd.models.weights import describe_mismatch

CHECKPOINT_FORMAT = "segkd-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the model at hand."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write a checkpoint atomically; a failed write (full disk) names the file it was writing."""
    try:
        atomic_torch_save(obj, path)
    except OSError as err:
        if err.filename is None:  # errors of write() itself carry no file name
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a file written by segkd; a plain state dict is returned as ``{"model": state_dict}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
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


def model_spec(ckpt: dict[str, Any], source: str | Path) -> tuple[str, dict[str, Any]]:
    """(model name, builder kwargs) stored in a segkd checkpoint."""
    try:
        model_cfg = dict(ckpt["config"]["model"])
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{source}: a plain state dict does not say which model it belongs to; give a config"
        ) from None
    return model_cfg.pop("name"), model_cfg
