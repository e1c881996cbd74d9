"""Cost of distillation: one training step of the PSPNet-18 student, alone and with each method.

For PSPNet-50 teacher → PSPNet-18 student (VOC's 21 classes, output stride 8) at one input size,
prints the median wall-clock time of

- a student-only training step (forward, task + aux losses, backward, SGD step);
- a teacher forward pass (eval mode, no gradients);
- the lower bound of any distillation step: student step + teacher forward;
- a distillation step per teacher → student method (defaults from ``segkd methods``), through
  the trainer's own ``training_losses``, with its ratio to the lower bound.

A ratio near 1.0 means the method adds almost nothing beyond running the teacher once. Weights
are random (timing does not depend on them). Examples:

    python benchmarks/distill_step.py                         # 473 px, batch 2, CPU or CUDA
    python benchmarks/distill_step.py --device cuda --amp bf16 --batch 8
    python benchmarks/distill_step.py --size 256 --iters 3 --methods logits_kd cwd --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from segkd.config import load_config
from segkd.distill import METHODS, FeatureTaps, build_method
from segkd.engine.builders import build_optimizer, build_student, model_kwargs, prepare_methods
from segkd.engine.teacher import LiveTeacher
from segkd.engine.trainer import training_losses
from segkd.models import build_model


def timed(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds of ``step`` after ``warmup`` untimed calls (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@contextmanager
def training_step(cfg, student: nn.Module, teacher: nn.Module | None, specs: list[dict[str, Any]],
                  batch: dict[str, torch.Tensor], device: torch.device) -> Iterator[Callable[[], None]]:
    """A closure doing one full optimisation step of ``student`` with the methods in ``specs``;
    the feature hooks it needs are removed when the block ends."""
    methods = nn.ModuleList(build_method(spec) for spec in specs)
    student_taps, teacher_taps = prepare_methods(methods, student, teacher, batch["image"])
    methods.to(device)
    optimizer = build_optimizer(cfg, student, methods)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    student.train()
    with FeatureTaps(student, student_taps) as student_hooks, \
            (LiveTeacher(teacher, teacher_taps) if teacher is not None else nullcontext()) as live_teacher:

        def step() -> None:
            losses = training_losses(cfg, student, live_teacher, methods, student_hooks, batch, device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            scaler.step(optimizer)
            scaler.update()

        yield step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473, help="square crop side (VOC recipe: 473)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    teacher_student = [name for name in METHODS.names() if METHODS.get(name).kind == "teacher_student"]
    parser.add_argument("--methods", nargs="+", default=teacher_student, choices=teacher_student, metavar="METHOD",
                        help=f"teacher → student methods to time (default: all: {' '.join(teacher_student)})")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    cfg = load_config("kd_pspnet50_to_18_voc", [f"train.amp={args.amp}"])
    torch.manual_seed(0)
    student = build_student(cfg).to(device)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_kwargs = model_kwargs(cfg.distill.teacher.model, cfg)
    teacher_kwargs.pop("pretrained", None)
    teacher = build_model(cfg.distill.teacher.model.name, **teacher_kwargs).to(device).eval().requires_grad_(False)
    batch = {
        "image": torch.randn(args.batch, 3, args.size, args.size, device=device),
        "mask": torch.randint(0, cfg.data.num_classes, (args.batch, args.size, args.size), device=device),
    }
    print(f"PSPNet-50 teacher → PSPNet-18 student, {args.batch}×3×{args.size}×{args.size}, {device}"
          f"{'' if args.amp == 'none' else ', amp ' + args.amp}, median of {args.iters} after {args.warmup} warm-up",
          file=sys.stderr)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16,
                              enabled=args.amp != "none")

    def teacher_forward() -> None:
        with torch.inference_mode(), amp():
            teacher(batch["image"])

    with training_step(cfg, student, None, [], batch, device) as step:
        student_ms = timed(step, device, args.warmup, args.iters)
    teacher_ms = timed(teacher_forward, device, args.warmup, args.iters)
    bound_ms = student_ms + teacher_ms
    rows: list[dict[str, Any]] = [
        {"step": "student only", "ms": student_ms, "ratio_to_bound": None},
        {"step": "teacher forward", "ms": teacher_ms, "ratio_to_bound": None},
        {"step": "lower bound (student + teacher fwd)", "ms": bound_ms, "ratio_to_bound": 1.0},
    ]
    for name in args.methods:
        student.load_state_dict(initial)  # every method starts from the same weights
        with training_step(cfg, student, teacher, [{"name": name}], batch, device) as step:
            ms = timed(step, device, args.warmup, args.iters)
        rows.append({"step": f"distill: {name}", "ms": ms, "ratio_to_bound": ms / bound_ms})
        print(f"  {name}: {ms:.1f} ms", file=sys.stderr)

    width = max(len(r["step"]) for r in rows)
    print(f"{'step':<{width}}  {'ms':>9}  {'× bound':>7}")
    for r in rows:
        ratio = "" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.2f}"
        print(f"{r['step']:<{width}}  {r['ms']:>9.1f}  {ratio:>7}")
    if args.json:
        meta = {"size": args.size, "batch": args.batch, "device": str(device), "amp": args.amp,
                "iters": args.iters, "warmup": args.warmup, "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"settings": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
