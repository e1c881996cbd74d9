"""Cost of distillation: one training step of the PSPNet-18 student, alone and with each method.

For PSPNet-50 teacher → PSPNet-18 student (VOC's 21 classes, output stride 8) at one input size,
every configuration below is timed in rounds, interleaved with the two references it is compared
with: in each round a configuration's step X, a student-only training step S and a teacher
forward pass T are timed one right after the other (their order rotating from round to round),
and the ratios X/S and X/(S + T) are taken within that triple. The table reports the median of
those per-round ratios, so slow drift of a shared machine cancels instead of landing on one row.

Rows:

- student only, teacher forward, and their sum: the lower bound of a live distillation step;
- ``distill: METHOD``: a full training step through the trainer's ``training_losses`` per
  teacher → student method (defaults from ``segkd methods``);
- ``cached teacher: logits_kd``: the student step plus reading the teacher's logits from a teacher
  cache on disk (fp16, ``segkd.engine.teacher_cache``) and applying the loss, i.e. offline
  distillation; the ratio to watch is × student (the teacher does not run);
- ``channels_last``: the student step and the teacher forward in channels-last memory format;
- ``teacher bf16``: the teacher forward under bf16 autocast, alone and inside a logits_kd step.

Weights are random and the learning rate is 0: every configuration times the same network, and
the optimiser still does all its work. Examples:

    python benchmarks/distill_step.py                         # 473 px, batch 2, CPU or CUDA
    python benchmarks/distill_step.py --device cuda --amp bf16 --batch 8
    python benchmarks/distill_step.py --size 257 --rounds 5 --methods logits_kd cwd --json out.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkd.config import Config, load_config
from segkd.distill import METHODS, FeatureTaps, build_method
from segkd.engine.builders import build_optimizer, build_student, model_kwargs
from segkd.engine.distiller import Distiller
from segkd.engine.teacher import LiveTeacher
from segkd.engine.teacher_cache import CachedTeacher, CacheReader, map_path
from segkd.engine.trainer import training_losses
from segkd.models import build_model

Step = Callable[[], None]


def clock(step: Step, device: torch.device) -> float:
    """Milliseconds of one call of ``step`` (CUDA synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def interleaved(steps: Mapping[str, Step], student: Step, teacher: Step, device: torch.device,
                rounds: int, warmup: int, log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Time each of ``steps`` beside a student step S and a teacher forward T, ``rounds`` times.

    Returns one row per step: its median ms, and the medians of the per-round ratios X/S,
    X/(S + T) and X/T.
    """
    for step in (student, teacher, *steps.values()):
        for _ in range(warmup):
            step()
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in steps}
    for r in range(rounds):
        for i, (name, step) in enumerate(steps.items()):
            triple = {"X": step, "S": student, "T": teacher}
            order = ["X", "S", "T"]
            shift = (r + i) % 3  # rotate so no configuration always runs first (or after the teacher)
            order = order[shift:] + order[:shift]
            ms = {key: clock(triple[key], device) for key in order}
            samples[name].append((ms["X"], ms["S"], ms["T"]))
        log(f"round {r + 1}/{rounds} done")
    rows = []
    for name, triples in samples.items():
        rows.append({
            "step": name,
            "ms": statistics.median(x for x, _, _ in triples),
            "x_student": statistics.median(x / s for x, s, _ in triples),
            "x_bound": statistics.median(x / (s + t) for x, s, t in triples),
            "x_teacher": statistics.median(x / t for x, _, t in triples),
            "student_ms": statistics.median(s for _, s, _ in triples),
            "teacher_ms": statistics.median(t for _, _, t in triples),
        })
    return rows


class StepFactory:
    """Builds closures doing one full optimisation step of ``student`` with some methods.

    Each closure holds a ``segkd.Distiller``, the trainer's loss step. Its taps stay on the student
    from the start, so a configuration's forward pass also records (one dict entry per tap) into
    the distillers of the others that share the student; each step reads its own fresh tensors.
    """

    def __init__(self, cfg: Config, batch: dict[str, torch.Tensor], device: torch.device) -> None:
        self.cfg, self.batch, self.device = cfg, batch, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")

    def __call__(self, student: nn.Module, specs: list[dict[str, Any]], teacher: nn.Module | None = None,
                 teacher_source: Callable[[nn.Module, dict[str, str]], Any] = LiveTeacher,
                 batch: dict[str, torch.Tensor] | None = None) -> Step:
        batch = batch or self.batch
        methods = nn.ModuleList(build_method(spec) for spec in specs)
        distiller = Distiller(student, teacher, methods, example=batch["image"])
        if teacher is not None:
            distiller.teacher_source = teacher_source(teacher, distiller.teacher_taps)
        optimizer = build_optimizer(self.cfg, student, methods)

        def step() -> None:
            student.train()
            losses = training_losses(self.cfg, student, distiller, batch, self.device)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(sum(losses.values())).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

        return step


class Bf16Teacher(LiveTeacher):
    """The live teacher with its forward pass under bf16 autocast (the student stays as it is)."""

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        with torch.autocast(batch["image"].device.type, dtype=torch.bfloat16):
            outputs = super().__call__(batch)
        return {k: v.float() for k, v in outputs.items()}


class ReadFromCache:
    """The cached teacher of a training run, with the cache read inside the step: each image's
    map loaded from its fp16 file and resized to the image's grid (``CacheReader``, which the
    data loader runs in training), then handed to ``CachedTeacher``. The map's augmentation,
    which the loader also does, is left out (the timed images are not augmented)."""

    def __init__(self, folder: Path, needed: dict[str, str], teacher: nn.Module, example: torch.Tensor) -> None:
        self.reader = CacheReader(folder, sorted(set(needed.values())), teacher.align_corners)
        self.cached = CachedTeacher(teacher, needed, example, teacher.align_corners)
        self.model = teacher

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        size = tuple(batch["image"].shape[-2:])
        per_image = [self.reader(i, size) for i in range(len(batch["image"]))]
        maps = {key: torch.stack([m[key] for m in per_image]).to(batch["image"].device) for key in per_image[0]}
        return self.cached({**batch, **maps})

    def close(self) -> None:
        pass


def write_cache(teacher: nn.Module, images: torch.Tensor, folder: Path) -> None:
    """The teacher's ``out`` and ``logits`` of each image in the cache's file layout (fp16)."""
    with torch.inference_mode(), FeatureTaps(teacher, {"logits": "logits"}) as hooks:
        outputs = {**teacher(images), **hooks.pop()}
    for name in ("out", "logits"):
        for i, tensor in enumerate(outputs[name]):
            path = map_path(folder, i, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, tensor.float().cpu().numpy().astype(np.float16))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473, help="square crop side (VOC recipe: 473)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast of every step")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each configuration first")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is over these)")
    teacher_student = [name for name in METHODS.names() if METHODS.get(name).kind == "teacher_student"]
    parser.add_argument("--methods", nargs="+", default=teacher_student, choices=teacher_student, metavar="METHOD",
                        help=f"teacher → student methods to time (default: all: {' '.join(teacher_student)})")
    parser.add_argument("--no-variants", action="store_true",
                        help="leave out the cached-teacher, channels_last and bf16 rows")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    cfg = load_config("kd_pspnet50_to_18_voc", [f"train.amp={args.amp}", "optim.lr=0"])
    torch.manual_seed(0)
    student = build_student(cfg).to(device)
    teacher_kwargs = model_kwargs(cfg.distill.teacher.model, cfg)
    teacher_kwargs.pop("pretrained", None)
    teacher = build_model(cfg.distill.teacher.model.name, **teacher_kwargs).to(device).eval().requires_grad_(False)
    batch = {
        "image": torch.randn(args.batch, 3, args.size, args.size, device=device),
        "mask": torch.randint(0, cfg.data.num_classes, (args.batch, args.size, args.size), device=device),
    }
    print(f"PSPNet-50 teacher → PSPNet-18 student, {args.batch}×3×{args.size}×{args.size}, {device}"
          f"{'' if args.amp == 'none' else ', amp ' + args.amp}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved rounds after {args.warmup} warm-up", file=sys.stderr)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16,
                              enabled=args.amp != "none")

    def forward(model: nn.Module, images: torch.Tensor) -> Step:
        def step() -> None:
            with torch.inference_mode(), amp():
                model(images)
        return step

    make_step = StepFactory(cfg, batch, device)
    student_step = make_step(student, [])
    teacher_forward = forward(teacher, batch["image"])
    steps: dict[str, Step] = {f"distill: {name}": make_step(student, [{"name": name}], teacher)
                              for name in args.methods}
    with tempfile.TemporaryDirectory() as cache_dir:
        if not args.no_variants:
            write_cache(teacher, batch["image"], Path(cache_dir))
            for at in ("logits", "out"):
                cached = ReadFromCache(Path(cache_dir), {at: at}, teacher, batch["image"])
                steps[f"cached teacher: logits_kd at {at}"] = make_step(
                    student, [{"name": "logits_kd", "at": at}], teacher, lambda *_, c=cached: c)
            cl_student = copy.deepcopy(student).to(memory_format=torch.channels_last)
            cl_teacher = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
            cl_batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
            steps["channels_last: student only"] = make_step(cl_student, [], batch=cl_batch)
            steps["channels_last: teacher forward"] = forward(cl_teacher, cl_batch["image"])
            steps["channels_last: distill: logits_kd"] = make_step(
                cl_student, [{"name": "logits_kd"}], cl_teacher, batch=cl_batch)

            def bf16_forward() -> None:
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                    teacher(batch["image"])

            steps["teacher bf16: teacher forward"] = bf16_forward
            steps["teacher bf16: distill: logits_kd"] = make_step(student, [{"name": "logits_kd"}], teacher,
                                                                   Bf16Teacher)
        rows = interleaved(steps, student_step, teacher_forward, device, args.rounds, args.warmup,
                           log=lambda line: print(f"  {line}", file=sys.stderr))

    student_ms = statistics.median(r["student_ms"] for r in rows)
    teacher_ms = statistics.median(r["teacher_ms"] for r in rows)
    head = [
        {"step": "student only", "ms": student_ms},
        {"step": "teacher forward", "ms": teacher_ms},
        {"step": "lower bound (student + teacher fwd)", "ms": student_ms + teacher_ms},
    ]
    for r in rows:  # a teacher forward is compared with the teacher forward, a step with the steps
        if r["step"].endswith("teacher forward"):
            r["x_student"] = r["x_bound"] = None
        else:
            r["x_teacher"] = None
    rows = head + rows

    def cell(value: float | None, digits: int = 2) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    width = max(len(r["step"]) for r in rows)
    print(f"{'step':<{width}}  {'ms':>9}  {'× student':>9}  {'× bound':>7}  {'× teacher':>9}")
    for r in rows:
        print(f"{r['step']:<{width}}  {r['ms']:>9.1f}  {cell(r.get('x_student')):>9}  "
              f"{cell(r.get('x_bound')):>7}  {cell(r.get('x_teacher')):>9}")
    if args.json:
        meta = {"size": args.size, "batch": args.batch, "device": str(device), "amp": args.amp,
                "rounds": args.rounds, "warmup": args.warmup, "threads": torch.get_num_threads(),
                "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"settings": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
