"""DDP plumbing: process-group set-up from torchrun's variables, sharding, gathering."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from segkd.config import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """The device ``train.device`` names; one this machine lacks is a ``ConfigError`` saying what to use."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{preference}'; use auto, cpu, cuda, cuda:N or mps") from None
    instead = "use --set train.device=auto (or cpu)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is '{preference}' but CUDA is not available on this machine; {instead}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device is '{preference}' but this machine has {torch.cuda.device_count()} "
                              f"GPU(s), numbered from 0; {instead}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device is 'mps' but MPS (Apple silicon) is not available; {instead}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device: '{preference}' is not a device segkd trains on; use auto, cpu, cuda or mps")
    return device


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group when launched by ``torchrun`` (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return env


def leave_process_group() -> None:
    """Destroy the default process group, then give gloo's worker threads the GIL for a moment.

    A gloo worker thread releases a finished collective's tensors after the caller has its result,
    and needs the GIL for it. Should the interpreter start tearing down first, that thread is ended
    mid-release and the process aborts (SIGABRT, "terminate called without an active exception")
    after its work is done. ``destroy_process_group`` does not join those threads when other
    objects still hold the group (modules imported after it was made may). A short sleep releases
    the GIL: best effort, not a guarantee, against a race inside torch.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(0.1)


def shutdown(env: DistEnv) -> None:
    if env.enabled:
        leave_process_group()


def epoch_indices(n: int, env: DistEnv, *, seed: int, epoch: int, shuffle: bool, drop_last_batch: int = 0) -> list[int]:
    """This rank's sample indices for one epoch.

    Training (``shuffle``): one permutation seeded by (seed, epoch), shared by all ranks, padded by
    wrapping so every rank gets the same number of samples. Evaluation: ``rank::world_size`` with no
    padding, so every sample is scored exactly once.
    """
    if not shuffle:
        return list(range(env.rank, n, env.world_size))
    gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    per_rank = -(-n // env.world_size)
    order = (order * (1 + per_rank * env.world_size // max(n, 1)))[: per_rank * env.world_size]
    mine = order[env.rank :: env.world_size]
    if drop_last_batch:
        mine = mine[: len(mine) - len(mine) % drop_last_batch]
    return mine


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-item list without DDP)."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's buffers (BN running statistics).

    DDP syncs buffers at the start of each forward, so after the last training step each rank
    holds statistics of its own last batch; without this, ranks would evaluate different models.
    """
    if env.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
