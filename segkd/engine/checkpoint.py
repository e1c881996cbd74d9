"""Checkpoints: written atomically, validated on load with messages that say what is wrong."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "segkd-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the model at hand."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A run killed mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source}: this checkpoint does not fit {type(model).__name__}"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
                parts.append(f"  {len(items)} {label} key(s): {shown}")
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(state)


def model_spec(ckpt: dict[str, Any], source: str | Path) -> tuple[str, dict[str, Any]]:
    """(model name, builder kwargs) stored in a segkd checkpoint."""
    try:
        model_cfg = dict(ckpt["config"]["model"])
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{source}: a plain state dict does not say which model it belongs to; give a config"
        ) from None
    return model_cfg.pop("name"), model_cfg
