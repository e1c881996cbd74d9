"""The one training loop for every task and method.

Reads top to bottom: set-up → data → models and methods → optimiser → resume → loop (step,
log, validate, checkpoint). Methods are called through their common interface only.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segkd.config import Config, blame_config, save_config
from segkd.data import DataError, build_dataset, check_data
from segkd.data.build import resolve_root
from segkd.data.transforms import resize_batch
from segkd.distill import FeatureTaps
from segkd.engine import builders
from segkd.engine.checkpoint import CHECKPOINT_FORMAT, atomic_save, load_model_state, read_checkpoint
from segkd.engine.determinism import SeededSamples, parameter_fingerprint, rng_state, seed_everything, set_rng_state
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
from segkd.engine.evaluate import autocast_context, evaluate
from segkd.engine.inference import predict_binary, predict_semantic
from segkd.engine.resume import (
    check_resume,
    describe_last_checkpoint,
    is_finite_checkpoint,
    prepare_run_dir,
    selects_on_test,
    weight_problems,
)
from segkd.engine.colorize import colorize_labels
from segkd.engine.schedule import lr_factor
from segkd.models.losses import task_loss


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that step."""


class DivergedWeightsError(NonFiniteLossError):
    """The weights are no longer finite (or have exploded); the checkpoint was not written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and how to continue."""


class _Progress:
    """Where a run stands, for messages written after it stopped."""

    iteration = 0
    last_checkpoint: dict[str, Any] | None = None  # {"iteration": n, "finite": bool}
    last_path: Path | None = None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def evaluate_with_config(model: nn.Module, dataset: Dataset, cfg: Config, device: torch.device,
                         env: DistEnv | None = None, **kwargs: Any) -> dict[str, Any]:
    """``evaluate`` with the protocol the config describes."""
    d, e = cfg.data, cfg.eval
    return evaluate(
        unwrap(model), dataset, task=cfg.task, device=device, env=env or DistEnv(), amp=cfg.train.amp,
        num_classes=d.num_classes, class_names=d.class_names, ignore_index=d.ignore_index,
        crop_size=d.crop_size, base_size=d.base_size, scales=e.scales, flip=e.flip,
        sliding=e.sliding, stride_rate=e.stride_rate, **kwargs,
    )


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
            raise TrainingInterrupted(
                f"interrupted at iteration {progress.iteration}; {where}; continue with --resume"
            ) from None


def _fit(cfg: Config, resume: bool, progress: _Progress, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    # ---- set-up
    device = pick_device(cfg.train.device)
    env = init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device(f"cuda:{env.local_rank}")
        torch.cuda.set_device(device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_dir = cfg.run_dir
    last_path = run_dir / "last.pt"
    progress.last_path = last_path
    checked = None
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if last_path.exists() and not resume:
            raise FileExistsError(
                f"{run_dir} already holds a run (last.pt); pass --resume to continue it, "
                "or choose another output_dir"
            )
        checked = check_resume(cfg, last_path) if resume and last_path.exists() else None  # before config.yaml
        prepare_run_dir(run_dir, checked["iteration"] if checked else None)
        save_config(cfg, run_dir / "config.yaml")
        if selects_on_test(cfg):
            print(f"{cfg.name}: the validation data is the test split, so no model is picked on it: "
                  "best.pt is not written and the last model (last.pt) is the result "
                  "(set data.val_split to a validation list to pick one)")

    # ---- data: every problem is reported before any training starts
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
        raise DataError(f"{len(train_set)} training samples is fewer than one batch of {batch_size}")
    max_iters = cfg.train.epochs * iters_per_epoch
    if cfg.train.max_iters:
        max_iters = min(max_iters, cfg.train.max_iters)

    # ---- models and methods
    with blame_config("model"):
        student = builders.build_student(cfg).to(device)
    methods = builders.build_methods(cfg).to(device)
    teacher = None
    if builders.needs_teacher(methods):
        assert cfg.distill.teacher is not None  # the config validator guarantees it
        with blame_config("distill.teacher"):
            teacher = builders.build_teacher(cfg.distill.teacher, cfg, device)
    example = next(iter(DataLoader(train_set, batch_size=2)))["image"].to(device)
    with blame_config("distill.methods"):
        student_taps, teacher_taps = builders.prepare_methods(methods, student, teacher, example)
    methods.to(device)
    if env.enabled and cfg.train.sync_bn:
        if device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        elif env.is_main:
            warnings.warn("train.sync_bn is ignored on the CPU: PyTorch's SyncBatchNorm needs CUDA", stacklevel=1)
    optimizer = builders.build_optimizer(cfg, student, methods)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16" and device.type == "cuda")

    # ---- resume
    iteration, best, history_path = 0, None, run_dir / "history.jsonl"
    if resume and last_path.exists():
        ckpt = checked or read_checkpoint(last_path)
        load_model_state(student, ckpt["model"], last_path)
        methods.load_state_dict(ckpt["methods"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        iteration, best = ckpt["iteration"], ckpt["best"]
        progress.iteration = iteration
        progress.last_checkpoint = {"iteration": iteration, "finite": is_finite_checkpoint(ckpt)}
        set_rng_state(ckpt["rng"])
        if env.is_main:
            print(f"resumed from {last_path} at iteration {iteration}/{max_iters}")

    model: nn.Module = student
    if env.enabled:
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if env.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
    s_hooks = cleanup.enter_context(FeatureTaps(student, student_taps))  # removed however the run ends
    t_hooks = cleanup.enter_context(FeatureTaps(teacher, teacher_taps)) if teacher is not None else None
    metric_name, higher_better = cfg.best_metric
    picks_best = not selects_on_test(cfg)

    def save(path: Path, extra: dict[str, Any] | None = None) -> None:
        bad = weight_problems(student, methods)
        if bad:
            raise DivergedWeightsError(
                f"weights diverged at iteration {iteration}: {', '.join(bad[:3])}"
                f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}; {path} was not overwritten, "
                f"{describe_last_checkpoint(progress.last_checkpoint, last_path)}. Try a lower optim.lr."
            )
        atomic_save({
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": student.state_dict(),
            "methods": methods.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "iteration": iteration, "best": best, "rng": rng_state(),
            **(extra or {}),
        }, path)
        if path == last_path:
            progress.last_checkpoint = {"iteration": iteration, "finite": True}

    def validate() -> dict[str, Any]:
        nonlocal best
        broadcast_buffers(student, env)
        metrics = evaluate_with_config(student, val_set, cfg, device, env)
        value = metrics[metric_name]
        improved = picks_best and (
            best is None or (value > best["value"] if higher_better else value < best["value"]))
        if improved:
            best = {"metric": metric_name, "value": value, "iteration": iteration}
        if env.is_main:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    writer.add_scalar(f"val/{k}", v, iteration)
            with history_path.open("a") as f:
                f.write(json.dumps({"iteration": iteration, "val": _scalars(metrics)}) + "\n")
            log_prediction_images(writer, student, val_set, cfg, device, iteration)
            if improved:
                atomic_save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(),
                             "model": student.state_dict(), "iteration": iteration, "metrics": _scalars(metrics)},
                            run_dir / "best.pt")
        return metrics

    # ---- loop
    metrics: dict[str, Any] = {}
    start_epoch = iteration // iters_per_epoch
    bar = tqdm(total=max_iters, initial=iteration, disable=not (env.is_main and cfg.train.progress),
               desc=cfg.name, dynamic_ncols=True)
    tick = time.perf_counter()
    for epoch in range(start_epoch, math.ceil(max_iters / iters_per_epoch)):
        train_set.epoch = epoch
        indices = epoch_indices(len(train_set), env, seed=cfg.train.seed, epoch=epoch, shuffle=True,
                                drop_last_batch=batch_size)
        done_in_epoch = iteration - epoch * iters_per_epoch
        loader = DataLoader(train_set, batch_size=batch_size, sampler=indices[done_in_epoch * batch_size:],
                            num_workers=cfg.data.num_workers, drop_last=True, pin_memory=device.type == "cuda",
                            # its own generator: creating the loader must not consume the global RNG,
                            # or a run resumed mid-epoch would drift from an uninterrupted one
                            generator=torch.Generator().manual_seed(cfg.train.seed + epoch))
        student.train()
        for batch in loader:
            if iteration >= max_iters:
                break
            if cfg.task == "binary" and cfg.data.multiscale_sizes:
                # one size per batch, drawn from (seed, iteration) so resumed runs draw the same
                sizes = cfg.data.multiscale_sizes
                side = sizes[random.Random(cfg.train.seed * 7919 + iteration).randrange(len(sizes))]
                batch = resize_batch(batch, side)
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            factor = lr_factor(cfg.schedule.name, iteration, max_iters, iters_per_epoch, cfg.schedule.power,
                               cfg.schedule.warmup)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            for method in methods:
                method.set_progress(iteration / max_iters)

            losses = training_losses(cfg, model, teacher, methods, s_hooks, t_hooks, batch, device)
            total = sum(losses.values())
            if not torch.isfinite(total):
                terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                raise NonFiniteLossError(
                    f"loss is {total.item()} at iteration {iteration} (epoch {epoch}): {terms}. "
                    f"Stopped; {describe_last_checkpoint(progress.last_checkpoint, last_path)}. "
                    "Try a lower optim.lr, or train.amp=none."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if env.enabled:  # method parts live outside DDP: average their gradients by hand
                for p in methods.parameters():
                    if p.grad is not None:
                        all_reduce_sum(p.grad, env).div_(env.world_size)
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            progress.iteration = iteration

            if env.is_main and (iteration % cfg.train.log_every == 0 or iteration == max_iters):
                elapsed, tick = time.perf_counter() - tick, time.perf_counter()
                values = {k: v.item() for k, v in losses.items()}
                values["total"] = total.item()
                for k, v in values.items():
                    writer.add_scalar(f"train/{k}", v, iteration)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], iteration)
                with history_path.open("a") as f:
                    f.write(json.dumps({"iteration": iteration, "train": values,
                                        "lr": optimizer.param_groups[0]["lr"]}) + "\n")
                bar.set_postfix(loss=f"{values['total']:.4f}",
                                it_s=f"{cfg.train.log_every / max(elapsed, 1e-9):.2f}")
            bar.update(1)
            if cfg.train.checkpoint_every_iters and iteration % cfg.train.checkpoint_every_iters == 0 and env.is_main:
                save(last_path)

        epochs_done = math.ceil(iteration / iters_per_epoch)
        finished = iteration >= max_iters
        if finished or epochs_done % cfg.train.val_every == 0:
            metrics = validate()
        if env.is_main:
            save(last_path)
        barrier(env)
        if finished:
            break
    bar.close()
    if not metrics:  # resumed a run that had already finished: score it rather than report nothing
        metrics = evaluate_with_config(student, val_set, cfg, device, env)
    s_hooks.remove()
    if t_hooks is not None:
        t_hooks.remove()

    # ---- final report: the student's metrics, and the teacher's on the same data when there is one
    report: dict[str, Any] = {"student": _scalars(metrics), "best": best, "iterations": iteration,
                              "selection": "best.pt on the validation split" if picks_best
                              else "last model (the validation data is the test split)"}
    if teacher is not None:
        report["teacher"] = _scalars(evaluate_with_config(teacher, val_set, cfg, device, env))
    if env.enabled:  # DDP must leave every replica with the same weights: check it, don't assume it
        fingerprints = gather_objects(parameter_fingerprint(student), env)
        report["replica_fingerprints"] = fingerprints
        if len(set(fingerprints)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter fingerprints {fingerprints}")
    if env.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        writer.close()
    shutdown(env)
    return report


@torch.inference_mode()
def log_prediction_images(writer: Any, model: nn.Module, dataset: Dataset, cfg: Config,
                          device: torch.device, step: int, count: int = 4) -> None:
    """Ground truth beside prediction for the first few validation images, in TensorBoard."""
    was_training = model.training
    model.eval()
    for index in range(min(count, len(dataset))):  # type: ignore[arg-type]
        sample = dataset[index]
        image = sample["image"].unsqueeze(0).to(device)
        mask = sample["mask"]
        if cfg.task == "binary":
            prob = predict_binary(model, image, tuple(mask.shape[-2:]))[0].cpu()
            panel = torch.cat([mask.float().reshape(prob.shape), prob], dim=-1)  # 1×H×2W
            writer.add_image(f"predictions/{sample['name']}", panel, step)
        else:
            d = cfg.data
            probs = predict_semantic(model, image, crop_size=d.crop_size, base_size=d.base_size, sliding=False)
            pred = probs.argmax(1)[0].cpu().numpy()
            panel = np.concatenate([colorize_labels(mask.numpy(), d.num_classes),
                                    colorize_labels(pred, d.num_classes)], axis=1)
            writer.add_image(f"predictions/{sample['name']}", panel, step, dataformats="HWC")
    model.train(was_training)


def training_losses(cfg: Config, model: nn.Module, teacher: nn.Module | None, methods: nn.ModuleList,
                    s_hooks: FeatureTaps, t_hooks: FeatureTaps | None, batch: dict[str, Any],
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Named, weighted loss terms of one step: the task loss, then each method's terms."""
    images, masks = batch["image"], batch["mask"]
    with autocast_context(device, cfg.train.amp):
        student_out = {**model(images), **s_hooks.pop()}
        teacher_out = None
        if teacher is not None and t_hooks is not None:
            with torch.inference_mode():
                raw = {**teacher(images), **t_hooks.pop()}
            # inference tensors cannot enter autograd graphs; a clone outside the mode can
            teacher_out = {k: v.clone() for k, v in raw.items()}
        ignore = cfg.data.ignore_index
        losses: dict[str, torch.Tensor] = {}
        if cfg.loss.main_weight:
            losses["task"] = cfg.loss.main_weight * task_loss(student_out["out"], masks, cfg.task, ignore)
        if "aux" in student_out and cfg.loss.aux_weight:
            losses["task_aux"] = cfg.loss.aux_weight * task_loss(student_out["aux"], masks, cfg.task, ignore)
        share = cfg.loss.distill_share if len(methods) else None
        if share is not None:
            losses = {k: (1 - share) * v for k, v in losses.items()}
        for method in methods:
            for term, value in method(student_out, teacher_out, batch).items():
                losses[f"{method.name}/{term}"] = value.float() * (1.0 if share is None else share)
    return losses


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a metrics dict (numbers and per-class tables)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}
