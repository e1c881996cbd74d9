"""Reproducibility: seeding, RNG state for exact resume, per-sample augmentation seeds."""
from __future__ import annotations

import hashlib
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class SeededSamples(Dataset):
    """Makes each sample's random augmentation a function of (seed, epoch, index) alone.

    Then a run resumed mid-epoch, or run with another number of loader workers, sees exactly the
    same augmented samples. Global RNG states are restored afterwards so dropout etc. are untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_seed = (self.seed * 1_000_003 + self.epoch * 100_003 + index) % (2**31)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            torch.manual_seed(sample_seed)
            sample = self.dataset[index]
        random.setstate(py_state)
        np.random.set_state(np_state)
        return sample


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (checkpoints load with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(state["python"]))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple in checkpoints of segkd 0.1
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def parameter_fingerprint(model: nn.Module) -> str:
    """SHA-1 of every parameter's bytes: equal fingerprints mean bit-identical weights."""
    digest = hashlib.sha1()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def machine_record(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """What a run's floats depend on besides its config and seed: the same seed gives other digits
    on another processor, thread count or torch version, so a run's record says which it had."""
    record: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "cpu": cpu_model(),
                              "threads": torch.get_num_threads(), "processes": processes}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def cpu_model() -> str:
    """The processor's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_machine(record: dict[str, Any] | None) -> str:
    """One line for a run's ``machine`` record (``not recorded`` for runs of older versions)."""
    if not record:
        return "not recorded"
    where = record.get("gpu") or record.get("cpu", "unknown")
    processes = record.get("processes", 1)
    return (f"{where}, {record.get('threads', '?')} thread(s)" + (f" × {processes} processes" if processes > 1 else "")
            + f", torch {record.get('torch', '?')}")
