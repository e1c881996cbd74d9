"""Use a trained checkpoint: evaluate it on a data set, or predict maps for new images."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segkd.config import Config, apply_overrides, blame_config, validate
from segkd.data import build_dataset
from segkd.data.classes import layout_palette
from segkd.data.readers import IMAGE_SUFFIXES, DataError, read_image
from segkd.data.transforms import build_eval_transform, to_tv_tensors
from segkd.distill import METHODS
from segkd.engine.builders import build_methods, build_student
from segkd.engine.checkpoint import TRUST_HINT, CheckpointError, load_model_state, read_checkpoint, trusted
from segkd.engine.checks import load_run_config, model_problems
from segkd.engine.colorize import colorize_labels, overlay
from segkd.engine.distiller import Distiller
from segkd.engine.distributed import pick_device
from segkd.engine.evaluate import evaluate_with_config
from segkd.engine.heads import has_heads, score_heads
from segkd.engine.inference import predict_binary, predict_semantic, to_uint8


def load_trained(checkpoint: str | Path, config: str | Path | None = None,
                 overrides: list[str] | None = None, *, trust: bool | None = None,
                 allow_import: bool = False) -> tuple[Config, torch.nn.Module, torch.device]:
    """The config (stored in the checkpoint unless ``config`` is given) and the loaded model, in eval mode.

    A stored config that builds its model by importing code (``model.name: import``) is refused
    unless ``trust`` (default: ``--trust-checkpoint`` / ``SEGKD_TRUST_CHECKPOINT=1``) or
    ``allow_import`` (the caller's own config asked for that import, as a comparison's runs do).
    """
    # a given config's bad model or method name is refused (one line) before the checkpoint is read
    cfg = load_run_config(config, overrides) if config is not None else None
    ckpt = read_checkpoint(checkpoint, trust)
    if cfg is None:
        cfg = stored_config(ckpt, checkpoint, overrides, trust, allow_import)
    device = pick_device(cfg.train.device)
    with blame_config("model"):
        model = build_student(cfg)
    load_model_state(model, ckpt["model"], checkpoint)
    return cfg, model.to(device).eval(), device


def stored_config(ckpt: dict[str, Any], checkpoint: str | Path, overrides: list[str] | None,
                  trust: bool | None, allow_import: bool) -> Config:
    """The run config a checkpoint stores, with ``overrides``; see ``load_trained`` for ``trust``."""
    if "config" not in ckpt:
        raise CheckpointError(f"{checkpoint}: a plain state dict holds no config; pass --config")
    stored = ckpt["config"]
    model_name = stored.get("model", {}).get("name") if isinstance(stored, dict) else None
    if model_name == "import" and not (allow_import or trusted(trust)):
        target = stored["model"].get("target")
        raise CheckpointError(
            f"{checkpoint}: its stored config builds the model by importing code ({target!r}), which "
            f"segkd runs only when asked; {TRUST_HINT}, or give --config"
        )
    # only the model is built from it: the methods a stored run named (perhaps renamed since) are not checked
    return validate(apply_overrides(stored, overrides or []), f"{checkpoint} (stored config)", overrides,
                    (model_problems,))


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | None = None,
                        overrides: list[str] | None = None, save_dir: Path | None = None) -> dict[str, Any]:
    cfg, model, device = load_trained(checkpoint, config, overrides)
    dataset = build_dataset(cfg.data, cfg.task, "val")
    if save_dir is not None:
        samples = dataset.samples
        check_prediction_outputs(save_dir, [s.image for s in samples], "--save-dir", "data set's",
                                 other_inputs=[s.mask for s in samples])
    metrics = evaluate_with_config(model, dataset, cfg, device, save_dir=save_dir, progress=True)
    return {k: v for k, v in metrics.items() if k != "curves"}


def evaluate_heads(checkpoint: str | Path, config: str | Path | None = None,
                   overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{"out": metrics, "method/head": metrics, ...}``: the student's output and each prediction head
    its self-distillation methods trained (auxiliary branches, a self-teacher), scored alike on the
    validation split. Methods without heads of their own (Tf-KD, SAD, the teacher-student methods)
    are left out."""
    cfg, model, device = load_trained(checkpoint, config, overrides)
    built = build_methods(cfg)
    kept = [i for i, method in enumerate(built) if not method.needs_teacher and has_heads(method)]
    if not kept:
        named = ", ".join(m.name for m in built) or "none"
        where = f"--config {config}" if config is not None else f"{checkpoint}: its run"
        with_heads = [n for n in METHODS.names() if has_heads(METHODS.get(n))]
        raise CheckpointError(f"{where} trained no method with prediction heads of its own (methods: {named}); "
                              f"--heads scores the heads of {', '.join(with_heads)}")
    stored = read_checkpoint(checkpoint).get("methods")
    if not isinstance(stored, dict) or not stored:
        raise CheckpointError(f"{checkpoint}: holds no method parts (a best.pt keeps only the model); "
                              "give the run's last.pt")
    methods = torch.nn.ModuleList(built[i] for i in kept)
    dataset = build_dataset(cfg.data, cfg.task, "val")
    example = torch.stack([dataset[i % len(dataset)]["image"] for i in range(2)]).to(device)
    with Distiller(model, None, methods, ignore_index=cfg.data.ignore_index, example=example) as distiller:
        state = {f"{kept.index(int(k.split('.', 1)[0]))}.{k.split('.', 1)[1]}": v for k, v in stored.items()
                 if int(k.split(".", 1)[0]) in kept}
        try:
            methods.load_state_dict(state)
        except RuntimeError:
            raise CheckpointError(f"{checkpoint}: its method parts do not fit the methods configured "
                                  f"({', '.join(m.name for m in methods)}); score it with its stored config "
                                  "(leave out --config and --set distill.*)") from None
        methods.to(device)
        results = {"out": evaluate_with_config(model, dataset, cfg, device, progress=True),
                   **score_heads(model, distiller, dataset, cfg, device)}
    return {name: {k: v for k, v in metrics.items() if k != "curves"} for name, metrics in results.items()}


def check_prediction_outputs(out_dir: Path, inputs: list[Path], option: str, input_option: str,
                             other_inputs: list[Path] = ()) -> None:
    """Refuse an output folder that would write over (or among) the inputs (and ``other_inputs``,
    e.g. masks), and two inputs that would be written to one file (``STEM.png``), before anything
    is written.

    Raises:
        FileExistsError: naming the folder or the pair of inputs.
    """
    out = out_dir.resolve()
    for folder in sorted({p.resolve().parent for p in [*inputs, *other_inputs]}):
        if out == folder or folder in out.parents:
            raise FileExistsError(
                f"{option} {out_dir} is {'the folder' if out == folder else 'inside the folder'} of the "
                f"{input_option} files ({folder}): predictions would be written among (or over) them; "
                "choose a folder outside it"
            )
    first: dict[str, Path] = {}
    for path in inputs:
        name = path.stem
        if name in first:
            raise FileExistsError(
                f"{first[name]} and {path} would both be written as {out_dir / (name + '.png')}; "
                "rename one, or run them apart"
            )
        first[name] = path


def list_images(source: str | Path, skipped: list[str] | None = None) -> list[Path]:
    """An image file, a folder of images (sorted), or a text file with one image path per line.

    Files of a folder that are not images are left out; each is added to ``skipped`` as a
    ``"path: reason"`` line when a list is given.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if skipped is not None:
            skipped += [f"{p}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})"
                        for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    elif source.suffix.lower() == ".txt":
        lines = [line.split()[0] for line in source.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        images = [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
    elif source.is_file():
        images = [source]
    else:
        raise FileNotFoundError(f"{source}: no such image, folder or list file")
    if not images:
        raise FileNotFoundError(f"{source}: no images found")
    return images


@torch.inference_mode()
def predict_images(checkpoint: str | Path, source: str | Path, output: str | Path,
                   overrides: list[str] | None = None, skipped: list[str] | None = None) -> list[Path]:
    """Write a prediction for each image: grey PNG (binary) or palette PNG (semantic).

    Semantic runs also write a colour overlay JPEG per image to ``output/overlay/``, apart from
    the label maps so that the folder can be scored as is with ``segkd eval --pred``.

    An unreadable image is skipped with a warning and the rest go on; ``skipped`` (when given)
    receives one ``"path: reason"`` line per skipped file, non-image files of a folder included.
    """
    skipped = [] if skipped is None else skipped
    images = list_images(source, skipped)
    out_dir = Path(output)
    check_prediction_outputs(out_dir, images, "--output", "--input")
    cfg, model, device = load_trained(checkpoint, None, overrides)
    transform = build_eval_transform(cfg.task, cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    palette = layout_palette(cfg.data.layout)
    written = []
    for path in images:
        try:
            rgb = read_image(path)
        except DataError as err:
            warnings.warn(f"skipped {err}", stacklevel=2)
            skipped.append(str(err))
            continue
        h, w = rgb.shape[:2]
        image, _ = transform(*to_tv_tensors(rgb, np.zeros((h, w), np.uint8)))
        image = image.unsqueeze(0).to(device)
        if cfg.task == "binary":
            Image.fromarray(to_uint8(predict_binary(model, image, (h, w))[0, 0])).save(out_dir / f"{path.stem}.png")
        else:
            e = cfg.eval
            probs = predict_semantic(model, image, crop_size=cfg.data.crop_size, base_size=cfg.data.base_size,
                                     scales=e.scales, flip=e.flip, sliding=e.sliding, stride_rate=e.stride_rate)
            label = probs.argmax(1)[0].to(torch.uint8).cpu().numpy()
            png = Image.fromarray(label).convert("P")
            png.putpalette(palette)
            png.save(out_dir / f"{path.stem}.png")
            blend = overlay(rgb, colorize_labels(label, cfg.data.num_classes, palette))
            (out_dir / "overlay").mkdir(exist_ok=True)
            Image.fromarray(blend).save(out_dir / "overlay" / f"{path.stem}.jpg", quality=90)
        written.append(out_dir / f"{path.stem}.png")
    return written
