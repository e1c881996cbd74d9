"""Model cost: parameters, FLOPs, inference latency, throughput and memory.

Conventions:
    - FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions, matrix
      products and attention only, one multiply–add = 2 FLOPs. Normalisation, activations,
      pooling and interpolation are not counted (they are a small share for these networks).
      ``gflops`` reports FLOPs / 1e9 for one image in eval mode.
    - Latency is wall-clock time of one forward pass of a batch under ``torch.inference_mode``,
      with CUDA synchronised before the clock is read; median and 90th percentile over ``iters``
      runs after ``warmup`` runs. Throughput = batch size / median latency.
    - Memory: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` during the timed runs
      (``cuda_peak_allocated_mb``); on CPU, the process's peak resident set size so far
      (``process_peak_rss_mb``), which includes everything the process loaded before — a
      ceiling, not the model's own footprint.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segkd.models.base import count_parameters

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_MB = 2**20


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    if len(input_size) != 2 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input_size must be (height, width) of positive ints, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


def gflops(model: nn.Module, input_size: tuple[int, int]) -> float:
    """GFLOPs (FLOPs / 1e9, multiply–add = 2) of one eval-mode forward pass of a 1×3×H×W image."""
    height, width = _check_size(input_size)
    image = torch.zeros(1, 3, height, width, device=_model_device(model))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.inference_mode(), counter:
        model(image)
    return counter.get_total_flops() / 1e9


def _amp_context(amp: str | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    if amp not in _AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {sorted(_AMP_DTYPES)}, got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


def _process_peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / _MB if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op CPU thread, then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    iters: int = 10,
    amp: str | None = None,
) -> dict[str, Any]:
    """Time eval-mode forward passes of a random B×3×H×W batch on ``device``.

    The model is moved to ``device`` (and stays there); its train/eval mode is restored after.

    Args:
        model: any module taking B×3×H×W.
        input_size: (H, W).
        batch_size: B.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        warmup: untimed runs first (allocator, cuDNN autotuning, lazy initialisation).
        iters: timed runs.
        amp: ``None``, ``"fp16"`` or ``"bf16"``: run under ``torch.autocast`` with that dtype.

    Returns:
        ``batch_size``, ``height``, ``width``, ``device``, ``amp``, ``latency_ms_median``,
        ``latency_ms_p90``, ``throughput_img_s``, and ``cuda_peak_allocated_mb`` (CUDA) or
        ``process_peak_rss_mb`` (CPU; see the module docstring).
    """
    height, width = _check_size(input_size)
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, iters >= 1, warmup >= 0; got {batch_size}, {iters}, {warmup}"
        )
    device = torch.device(device)
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    image = torch.randn(batch_size, 3, height, width, device=device, generator=generator)
    with _eval_mode(model), torch.inference_mode(), _amp_context(amp, device):
        timings_ms = _timed_forwards(model, image, warmup, iters)
    median = float(np.median(timings_ms))
    row: dict[str, Any] = {
        "batch_size": batch_size,
        "height": height,
        "width": width,
        "device": str(device),
        "amp": amp,
        "latency_ms_median": median,
        "latency_ms_p90": float(np.percentile(timings_ms, 90)),
        "throughput_img_s": batch_size / (median / 1e3),
    }
    if device.type == "cuda":
        row["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / _MB
    else:
        row["process_peak_rss_mb"] = _process_peak_rss_mb()
    return row


def _timed_forwards(model: nn.Module, image: torch.Tensor, warmup: int, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` forward passes of ``image``, after ``warmup`` untimed ones
    (on CUDA the peak-memory counter restarts after the warm-up)."""
    device = image.device
    is_cuda = device.type == "cuda"
    for _ in range(warmup):
        model(image)
    if is_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    timings_ms = []
    for _ in range(iters):
        start = time.perf_counter()
        model(image)
        if is_cuda:
            # Kernels run asynchronously: without this the clock measures only the launch.
            torch.cuda.synchronize(device)
        timings_ms.append((time.perf_counter() - start) * 1e3)
    return timings_ms


def benchmark_models(
    models: Mapping[str, nn.Module],
    sizes: Sequence[tuple[int, int]],
    batch_sizes: Sequence[int],
    device: str | torch.device = "cpu",
    *,
    warmup: int = 3,
    iters: int = 10,
    amp: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, size, batch size): parameters, GFLOPs per image and timings.

    Rows hold ``model``, ``params_m`` (millions), ``gflops`` (per image, at that size) and the
    keys of :func:`measure_latency`.
    """
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        params_m = count_parameters(model) / 1e6
        for size in sizes:
            flops = gflops(model.to(device), size)
            for batch_size in batch_sizes:
                timing = measure_latency(
                    model, size, batch_size=batch_size, device=device,
                    warmup=warmup, iters=iters, amp=amp,
                )
                rows.append({"model": name, "params_m": params_m, "gflops": flops, **timing})
    return rows


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """An aligned text table: one column per key (in first-seen order), numbers right-aligned.

    Missing values print as ``-``, floats with 2 decimals (3 significant digits below 1).
    """
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_format_cell(row.get(key)) for key in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(key), (int, float)) or row.get(key) is None for row in rows)
        for key in columns
    ]
    widths = [max(len(key), *(len(line[i]) for line in cells)) for i, key in enumerate(columns)]

    def render(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [render(columns), "  ".join("-" * w for w in widths)]
    lines.extend(render(line) for line in cells)
    return "\n".join(lines)
