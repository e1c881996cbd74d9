"""The one training loop for every task and method.

``_fit`` is the loop itself and fits on one screen: set up a run, then for each epoch train
its batches (one step, a log line, a checkpoint when due), validate, checkpoint, and finally
report. Each step is a named function below it. Methods are called through their common
interface only, and the teacher's tensors come from a teacher source (``segkd.engine.teacher``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segkd.config import Config, blame_config, save_config
from segkd.data import DataError, build_dataset, check_data
from segkd.data.build import resolve_root
from segkd.data.transforms import resize_batch
from segkd.engine import builders
from segkd.engine.checkpoint import CHECKPOINT_FORMAT, atomic_save, load_model_state, read_checkpoint
from segkd.engine.determinism import (
    SeededSamples,
    machine_record,
    parameter_fingerprint,
    rng_state,
    seed_everything,
    set_rng_state,
)
from segkd.engine.distiller import Distiller
from segkd.engine.distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    epoch_indices,
    gather_objects,
    init_distributed,
    pick_device,
    shutdown,
)
from segkd.engine.errors import DivergedWeightsError, NonFiniteLossError, TrainingInterrupted
from segkd.engine.evaluate import autocast_context, evaluate_with_config
from segkd.engine.heads import score_heads
from segkd.engine.panels import log_prediction_images
from segkd.engine.resume import (
    check_resume,
    describe_last_checkpoint,
    hold_run_folder,
    prepare_run_dir,
    selects_on_test,
    state_problems,
)
from segkd.engine.schedule import lr_factor
from segkd.engine.teacher import teacher_source
from segkd.models.losses import task_loss


class _Progress:
    """Where a run stands, for messages written after it stopped."""

    iteration = 0
    last_checkpoint: dict[str, Any] | None = None  # {"iteration": n, "finite": bool}
    last_path: Path | None = None

    def __init__(self) -> None:
        self.stop = StopRequest()


class StopRequest:
    """SIGTERM (what batch schedulers send before they end a job) or a first Ctrl-C ask the loop
    to stop after the current step, with a checkpoint at that iteration; a second Ctrl-C stops at
    once. Handlers are installed only in the main thread, and restored on exit."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: Any) -> None:
        if self.signal_name is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        print(f"\n{self.signal_name}: stopping after this step with a checkpoint (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)


RESUME_HINT = "continue with --resume"  # how segkd train goes on; a command that resumes otherwise says its own


def fit(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` (with ``cfg.distill`` methods, if any). Returns the final metrics.

    Writes to ``cfg.run_dir``: ``config.yaml``, ``last.pt`` (every epoch, atomically), ``best.pt``
    (picked on the validation split; not written when that split is the test split),
    ``metrics.json``, ``history.jsonl`` and TensorBoard logs under ``tb/``.

    Raises:
        TrainingInterrupted: on Ctrl-C, naming the iteration; feature hooks are removed whatever
            ends the run.
    """
    progress = _Progress()
    with contextlib.ExitStack() as cleanup:
        try:
            return _fit(cfg, resume, progress, cleanup)
        except KeyboardInterrupt:
            where = describe_last_checkpoint(progress.last_checkpoint, progress.last_path or cfg.run_dir / "last.pt")
            how = f"stopped by {progress.stop.signal_name}" if progress.stop.signal_name else "interrupted"
            raise TrainingInterrupted(
                f"{how} at iteration {progress.iteration}; {where}; {RESUME_HINT}"
            ) from None


def _fit(cfg: Config, resume: bool, progress: _Progress, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    run = set_up(cfg, resume, progress, cleanup)  # run dir, data, models, methods, optimiser, resume
    metrics: dict[str, Any] = {}
    row = os.environ.get("SEGKD_PROGRESS_ROW")  # runs trained side by side each keep a line (segkd compare)
    bar = tqdm(total=run.max_iters, initial=run.iteration, disable=not (run.env.is_main and cfg.train.progress),
               desc=f"{cfg.name} seed {cfg.train.seed}", dynamic_ncols=True,
               position=int(row) if row else None, leave=row is None)
    for epoch in range(run.iteration // run.iters_per_epoch, run.epochs):
        for batch in epoch_batches(run, epoch):  # a resumed epoch starts at its next batch
            losses = train_step(run, batch, epoch)
            log_step(run, losses, bar)
            if run.checkpoint_due:  # every train.checkpoint_every_iters, and when asked to stop
                save_checkpoint(run)
            stop_if_asked(run)
        if run.finished or run.epochs_done % cfg.train.val_every == 0:
            metrics = validate(run)
        if run.env.is_main:
            save_checkpoint(run)
        barrier(run.env)
        stop_if_asked(run)
        if run.finished:
            break
    bar.close()
    return final_report(run, metrics)


# ---------------------------------------------------------------- the run and its set-up


@dataclass
class TrainingRun:
    """What a run holds once set up; the steps below read it and advance ``iteration``."""

    cfg: Config
    env: DistEnv
    device: torch.device
    progress: _Progress
    train_set: SeededSamples
    val_set: Dataset
    iters_per_epoch: int
    max_iters: int
    student: nn.Module
    model: nn.Module  # the student, wrapped for DDP when distributed
    methods: nn.ModuleList
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    distiller: Distiller | None = None  # the methods' loss step: taps, teacher, terms
    writer: Any = None  # TensorBoard, on the main process
    iteration: int = 0
    best: dict[str, Any] | None = None
    tick: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.perf_counter)  # this session's set-up end
    seconds_before: float = 0.0  # training time of the sessions a resumed run continues

    @property
    def train_seconds(self) -> float:
        """Wall-clock time of the training loop so far (validation included), across resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def last_path(self) -> Path:
        return self.cfg.run_dir / "last.pt"

    @property
    def history_path(self) -> Path:
        return self.cfg.run_dir / "history.jsonl"

    @property
    def epochs(self) -> int:
        return math.ceil(self.max_iters / self.iters_per_epoch)

    @property
    def epochs_done(self) -> int:
        return math.ceil(self.iteration / self.iters_per_epoch)

    @property
    def finished(self) -> bool:
        return self.iteration >= self.max_iters

    @property
    def checkpoint_due(self) -> bool:
        """Whether ``train.checkpoint_every_iters`` asks for a checkpoint now (main process)."""
        every = self.cfg.train.checkpoint_every_iters
        due = (bool(every) and self.iteration % every == 0) or self.progress.stop.signal_name is not None
        return due and self.env.is_main

    @property
    def picks_best(self) -> bool:
        return not selects_on_test(self.cfg)


def set_up(cfg: Config, resume: bool, progress: _Progress, cleanup: contextlib.ExitStack) -> TrainingRun:
    """Everything before the first step: device, run folder, data, models, methods, optimiser,
    and on ``resume`` the state of the last checkpoint. Hooks are registered on ``cleanup``."""
    device = pick_device(cfg.train.device)
    env = init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device(f"cuda:{env.local_rank}")
        torch.cuda.set_device(device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    progress.last_path = cfg.run_dir / "last.pt"
    if env.is_main:  # one training per run folder; held until the run ends
        cleanup.enter_context(hold_run_folder(cfg.run_dir))
    cleanup.enter_context(progress.stop)
    resume_from = prepare_output(cfg, env, resume)
    train_set, val_set, iters_per_epoch, max_iters = load_data(cfg, env)

    with blame_config("model"):
        student = builders.build_student(cfg).to(device)
    methods = builders.build_methods(cfg).to(device)
    teacher_model = None
    if builders.needs_teacher(methods):
        assert cfg.distill.teacher is not None  # the config validator guarantees it
        with blame_config("distill.teacher"):
            teacher_model = builders.build_teacher(cfg.distill.teacher, cfg, device)
    example = next(iter(DataLoader(train_set, batch_size=2)))["image"].to(device)
    if env.enabled and cfg.train.sync_bn:  # before the taps go on: conversion replaces the BatchNorm modules
        if device.type == "cuda":
            student, methods = sync_batchnorm(student, methods)
        elif env.is_main:
            warnings.warn("train.sync_bn is ignored on the CPU: PyTorch's SyncBatchNorm needs CUDA", stacklevel=1)
    with blame_config("distill.methods"):  # the loss step of segkd.Distiller; its hooks go however the run ends
        distiller = cleanup.enter_context(Distiller(student, teacher_model, methods,
                                                    ignore_index=cfg.data.ignore_index, example=example))
    if env.enabled and cfg.train.sync_bn and device.type == "cuda":  # parts built from the probe, too
        sync_batchnorm(distiller.methods)
    if cfg.train.channels_last:  # before the optimiser and the resume: both keep these parameter objects
        for module in (student, distiller.methods, teacher_model):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    optimizer = builders.build_optimizer(cfg, student, distiller.methods)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16" and device.type == "cuda")

    run = TrainingRun(
        cfg=cfg, env=env, device=device, progress=progress, train_set=train_set, val_set=val_set,
        iters_per_epoch=iters_per_epoch, max_iters=max_iters, student=student, model=student,
        methods=distiller.methods, optimizer=optimizer, scaler=scaler, distiller=distiller,
    )
    if resume_from is not None:
        restore(run, resume_from)
    if env.enabled:
        run.model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    if env.is_main:
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(run.run_dir / "tb"))
    if teacher_model is not None:  # live, or read from a teacher cache (filled here on first use)
        distiller.teacher_source = teacher_source(
            cfg, teacher_model, distiller.methods, distiller.teacher_taps, train_set.dataset, example, env, device)
    run.tick = run.started = time.perf_counter()
    return run


def sync_batchnorm(*modules: nn.Module) -> tuple[nn.Module, ...]:
    """``modules`` with every BatchNorm synchronised across processes (the student and the methods'
    own parts alike, so a method's projection head normalises over the global batch too).
    Containers are converted in place; their parameters stay the same objects."""
    return tuple(nn.SyncBatchNorm.convert_sync_batchnorm(module) for module in modules)


def prepare_output(cfg: Config, env: DistEnv, resume: bool) -> dict[str, Any] | None:
    """Check and tidy the run folder, write ``config.yaml``; the checkpoint to resume from (its
    config checked against ``cfg``) or None when starting afresh."""
    last_path = cfg.run_dir / "last.pt"
    checked = None
    if env.is_main:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        if last_path.exists() and not resume:
            raise FileExistsError(
                f"{cfg.run_dir} already holds a run (last.pt); pass --resume to continue it, "
                "or choose another output_dir"
            )
        checked = check_resume(cfg, last_path) if resume and last_path.exists() else None  # before config.yaml
        prepare_run_dir(cfg.run_dir, checked["iteration"] if checked else None)
        save_config(cfg, cfg.run_dir / "config.yaml")
        if selects_on_test(cfg):
            print(f"{cfg.name}: the validation data is the test split, so no model is picked on it: "
                  "best.pt is not written and the last model (last.pt) is the result "
                  "(set data.val_split to a validation list to pick one)")
    if not (resume and last_path.exists()):
        return None
    return checked or read_checkpoint(last_path)  # other ranks read it themselves


def load_data(cfg: Config, env: DistEnv) -> tuple[SeededSamples, Dataset, int, int]:
    """Training and validation sets, iterations per epoch and in all; every data problem is
    reported before any training starts."""
    if env.is_main:
        resolve_root(cfg.data, cfg.task)  # generates a synthetic set once, before other ranks read it
        problems = check_data(cfg.data, cfg.task)
        if problems:
            raise DataError("data check failed:\n  " + "\n  ".join(problems))
    barrier(env)
    train_set = SeededSamples(build_dataset(cfg.data, cfg.task, "train"), cfg.train.seed)
    val_set = build_dataset(cfg.data, cfg.task, "val")
    batch_size = cfg.data.batch_size
    iters_per_epoch = len(epoch_indices(len(train_set), env, seed=0, epoch=0, shuffle=True,
                                        drop_last_batch=batch_size)) // batch_size
    if iters_per_epoch == 0:
        raise DataError(f"data.batch_size: {batch_size} exceeds the {len(train_set)} training samples (per process); "
                        "no full batch could be formed: lower data.batch_size")
    max_iters = cfg.train.epochs * iters_per_epoch
    if cfg.train.max_iters:
        max_iters = min(max_iters, cfg.train.max_iters)
    return train_set, val_set, iters_per_epoch, max_iters


def restore(run: TrainingRun, ckpt: dict[str, Any]) -> None:
    """Continue from ``ckpt``: weights, method parts, optimiser, scaler, iteration, best, RNG."""
    load_model_state(run.student, ckpt["model"], run.last_path)
    run.methods.load_state_dict(ckpt["methods"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.iteration, run.best = ckpt["iteration"], ckpt["best"]
    run.seconds_before = float(ckpt.get("train_seconds", 0.0))
    run.progress.iteration = run.iteration
    run.progress.last_checkpoint = {"iteration": run.iteration, "finite": not state_problems(ckpt["model"])}
    set_rng_state(ckpt["rng"])
    if run.env.is_main:
        print(f"resumed from {run.last_path} at iteration {run.iteration}/{run.max_iters}")


# ---------------------------------------------------------------- the steps of the loop


def epoch_batches(run: TrainingRun, epoch: int) -> Iterator[dict[str, Any]]:
    """The batches of ``epoch`` not trained yet, until the last iteration."""
    cfg, batch_size = run.cfg, run.cfg.data.batch_size
    run.train_set.epoch = epoch
    indices = epoch_indices(len(run.train_set), run.env, seed=cfg.train.seed, epoch=epoch, shuffle=True,
                            drop_last_batch=batch_size)
    done_in_epoch = run.iteration - epoch * run.iters_per_epoch
    loader = DataLoader(run.train_set, batch_size=batch_size, sampler=indices[done_in_epoch * batch_size:],
                        num_workers=cfg.data.num_workers, drop_last=True, pin_memory=run.device.type == "cuda",
                        # its own generator: creating the loader must not consume the global RNG,
                        # or a run resumed mid-epoch would drift from an uninterrupted one
                        generator=torch.Generator().manual_seed(cfg.train.seed + epoch),
                        worker_init_fn=_leave_stopping_to_the_trainer)
    run.student.train()
    for batch in loader:
        if run.finished:
            return
        yield batch


def _leave_stopping_to_the_trainer(worker_id: int) -> None:
    """Loader workers ignore SIGTERM: a scheduler that signals every process of a job would otherwise
    kill them mid-batch and the trainer would crash instead of stopping after its step with a checkpoint
    (Ctrl-C's SIGINT the workers already leave to the main process)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def train_step(run: TrainingRun, batch: dict[str, Any], epoch: int) -> dict[str, torch.Tensor]:
    """One optimisation step: batch to the device, LR and method progress, losses, NaN guard,
    backward, step. Returns the step's named loss terms."""
    cfg, iteration = run.cfg, run.iteration
    if cfg.task == "binary" and cfg.data.multiscale_sizes:
        # one size per batch, drawn from (seed, iteration) so resumed runs draw the same
        sizes = cfg.data.multiscale_sizes
        side = sizes[random.Random(cfg.train.seed * 7919 + iteration).randrange(len(sizes))]
        batch = resize_batch(batch, side)
    batch = {k: v.to(run.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if cfg.train.channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    factor = lr_factor(cfg.schedule.name, iteration, run.max_iters, run.iters_per_epoch, cfg.schedule.power,
                       cfg.schedule.warmup)
    for group in run.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    run.distiller.set_progress(iteration / run.max_iters)

    losses = training_losses(cfg, run.model, run.distiller, batch, run.device)
    total = sum(losses.values())
    if not torch.isfinite(total):
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise NonFiniteLossError(
            f"loss is {total.item()} at iteration {iteration} (epoch {epoch}): {terms}. "
            f"Stopped; {describe_last_checkpoint(run.progress.last_checkpoint, run.last_path)}. "
            "Try a lower optim.lr, or train.amp=none."
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    run.distiller.average_gradients()  # method parts live outside DDP: averaged by hand
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.iteration += 1
    run.progress.iteration = run.iteration
    return losses


def training_losses(cfg: Config, model: nn.Module, distiller: Distiller, batch: dict[str, Any],
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Named, weighted loss terms of one step: the task loss, then each method's terms.

    The methods' terms come from ``distiller`` (``segkd.Distiller``, whose taps, teacher source
    and methods the run set up), as they would in a user's own loop.
    """
    images, masks = batch["image"], batch["mask"]
    with autocast_context(device, cfg.train.amp):
        student_out = model(images)
        ignore = cfg.data.ignore_index
        losses: dict[str, torch.Tensor] = {}
        if cfg.loss.main_weight:
            losses["task"] = cfg.loss.main_weight * task_loss(student_out["out"], masks, cfg.task, ignore)
        if "aux" in student_out and cfg.loss.aux_weight:
            losses["task_aux"] = cfg.loss.aux_weight * task_loss(student_out["aux"], masks, cfg.task, ignore)
        share = cfg.loss.distill_share if len(distiller.methods) else None
        if share is not None:
            losses = {k: (1 - share) * v for k, v in losses.items()}
        for term, value in distiller(student_out, batch).items():
            losses[term] = value * (1.0 if share is None else share)
    return losses


def log_step(run: TrainingRun, losses: dict[str, torch.Tensor], bar: tqdm) -> None:
    """Every ``train.log_every`` iterations (and the last): the losses and the LR to TensorBoard
    and ``history.jsonl``, the speed to the progress bar."""
    cfg, iteration = run.cfg, run.iteration
    if run.env.is_main and (iteration % cfg.train.log_every == 0 or iteration == run.max_iters):
        elapsed, run.tick = time.perf_counter() - run.tick, time.perf_counter()
        values = {k: v.item() for k, v in losses.items()}
        values["total"] = sum(losses.values()).item()
        lr = run.optimizer.param_groups[0]["lr"]
        for k, v in values.items():
            run.writer.add_scalar(f"train/{k}", v, iteration)
        run.writer.add_scalar("train/lr", lr, iteration)
        with run.history_path.open("a") as f:
            f.write(json.dumps({"iteration": iteration, "train": values, "lr": lr}) + "\n")
        bar.set_postfix(loss=f"{values['total']:.4f}", it_s=f"{cfg.train.log_every / max(elapsed, 1e-9):.2f}")
    bar.update(1)


def save_checkpoint(run: TrainingRun, path: Path | None = None) -> None:
    """Write ``last.pt`` (or ``path``) atomically; diverged weights are never written."""
    path = path or run.last_path
    model, methods = run.student.state_dict(), run.methods.state_dict()
    bad = state_problems(model) + state_problems(methods)
    if bad:
        raise DivergedWeightsError(
            f"weights diverged at iteration {run.iteration}: {', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}; {path} was not overwritten, "
            f"{describe_last_checkpoint(run.progress.last_checkpoint, run.last_path)}. Try a lower optim.lr."
        )
    atomic_save({
        "format": CHECKPOINT_FORMAT, "config": run.cfg.to_dict(), "model": model,
        "methods": methods, "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "iteration": run.iteration, "best": run.best, "rng": rng_state(),
        "train_seconds": run.train_seconds,
    }, path)
    if path == run.last_path:
        run.progress.last_checkpoint = {"iteration": run.iteration, "finite": True}


def stop_if_asked(run: TrainingRun) -> None:
    """End the run (as Ctrl-C does) when a stop was asked for; every process stops at the same step."""
    asked = run.progress.stop.signal_name is not None
    if run.env.enabled:
        asked = bool(all_reduce_sum(torch.tensor([float(asked)], device=run.device), run.env).item())
    if asked:
        raise KeyboardInterrupt


def validate(run: TrainingRun) -> dict[str, Any]:
    """Score the student on the validation split, log it, and write ``best.pt`` when it improved
    (never when the validation data is the test split)."""
    cfg, iteration = run.cfg, run.iteration
    metric_name, higher_better = cfg.best_metric
    broadcast_buffers(run.student, run.env)
    metrics = evaluate_with_config(run.student, run.val_set, cfg, run.device, run.env)
    value, best = metrics[metric_name], run.best
    improved = run.picks_best and (
        best is None or (value > best["value"] if higher_better else value < best["value"]))
    if improved:
        run.best = {"metric": metric_name, "value": value, "iteration": iteration}
    if run.env.is_main:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                run.writer.add_scalar(f"val/{k}", v, iteration)
        with run.history_path.open("a") as f:
            f.write(json.dumps({"iteration": iteration, "val": _scalars(metrics)}) + "\n")
        log_prediction_images(run.writer, run.student, run.val_set, cfg, run.device, iteration)
        if improved:
            atomic_save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(),
                         "model": run.student.state_dict(), "iteration": iteration, "metrics": _scalars(metrics)},
                        run.run_dir / "best.pt")
    return metrics


def final_report(run: TrainingRun, metrics: dict[str, Any]) -> dict[str, Any]:
    """The student's metrics, and the teacher's on the same data when there is one; written to
    ``metrics.json``. DDP replicas are checked to hold the same weights."""
    cfg, env = run.cfg, run.env
    if not metrics:  # resumed a run that had already finished: score it rather than report nothing
        metrics = evaluate_with_config(run.student, run.val_set, cfg, run.device, env)
    report: dict[str, Any] = {"student": _scalars(metrics), "best": run.best, "iterations": run.iteration,
                              "train_seconds": round(run.train_seconds, 1),
                              "selection": "best.pt on the validation split" if run.picks_best
                              else "last model (the validation data is the test split)",
                              "machine": machine_record(run.device, env.world_size)}
    # a self-distillation method's own heads, scored like the output (a diagnostic; nothing picked on it)
    if heads := score_heads(run.student, run.distiller, run.val_set, cfg, run.device, env):
        report["heads"] = {name: _scalars(head) for name, head in heads.items()}
    run.distiller.close()
    if run.distiller.teacher is not None:
        report["teacher"] = _scalars(evaluate_with_config(run.distiller.teacher, run.val_set, cfg, run.device, env))
    if env.enabled:  # DDP must leave every replica with the same weights: check it, don't assume it
        fingerprints = gather_objects(parameter_fingerprint(run.student), env)
        report["replica_fingerprints"] = fingerprints
        if len(set(fingerprints)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter fingerprints {fingerprints}")
    if env.is_main:
        (run.run_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        run.writer.close()
    shutdown(env)
    return report


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a metrics dict (numbers and per-class tables)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}
