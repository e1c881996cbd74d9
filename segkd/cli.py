"""``segkd``: one command line for training, evaluating, predicting, comparing and exporting."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, str, AddArgs, Run]] = {}  # name → (summary, examples, add_args, run)


def command(name: str, summary: str, examples: str):
    """Register a sub-command: ``add_args(parser)`` then ``run(args) -> exit code``."""

    def decorator(add_args: Callable[[argparse.ArgumentParser], None]):
        def bind(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = (summary, textwrap.dedent(examples).strip(), add_args, run)
            return run

        return bind

    return decorator


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("config", nargs=None if required else "?", help="a YAML config file or the name of a shipped one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2))
        print(f"wrote {path}")


# ------------------------------------------------------------------ check-data
def _check_data_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)


@command("check-data", "check a data set for missing, unreadable or inconsistent files", """
    segkd check-data tiny_binary
    segkd check-data my_voc.yaml --set data.root=/data/VOCdevkit/VOC2012
""")(_check_data_args)
def run_check_data(args: argparse.Namespace) -> int:
    from segkd.config import load_config
    from segkd.data import check_data

    cfg = load_config(args.config, args.overrides)
    problems = check_data(cfg.data, cfg.task)
    if problems:
        print(f"{len(problems)} problem(s) found:")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"data OK ({cfg.data.layout}, root {cfg.data.root})")
    return 0


# ------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from last.pt")


@command("train", "train a model, with or without distillation (DDP: launch with torchrun)", """
    segkd train tiny_binary
    segkd train pspnet18_voc --set data.root=/data/VOC2012 --set train.amp=bf16
    segkd train tiny_semantic_kd --resume
    torchrun --nproc_per_node 4 -m segkd train pspnet50_voc --set train.sync_bn=true
""")(_train_args)
def run_train(args: argparse.Namespace) -> int:
    from segkd.config import load_config
    from segkd.engine.trainer import fit

    cfg = load_config(args.config, args.overrides)
    report = fit(cfg, resume=args.resume)
    from segkd.metrics import format_table

    for role in ("teacher", "student"):
        if report.get(role):
            print(f"\n{role} (validation)\n" + format_table(report[role]))
    print(f"outputs in {cfg.run_dir}")
    return 0


# ------------------------------------------------------------------ eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("score saved prediction maps")
    src.add_argument("--pred", help="folder of prediction maps (PNG); matched to masks by name")
    src.add_argument("--gt", help="folder of ground-truth masks")
    src.add_argument("--num-classes", type=int,
                     help="semantic label maps with this many classes (default: binary maps)")
    src.add_argument("--ignore-index", type=int, default=255)
    mod = p.add_argument_group("score a trained model")
    mod.add_argument("--checkpoint", help="a checkpoint written by segkd train")
    mod.add_argument("--config", help="config for data and protocol (default: the one stored in the checkpoint)")
    mod.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mod.add_argument("--save-dir", help="also write the prediction maps here")
    p.add_argument("--output", help="write the metrics as JSON to this file")


@command("eval", "score prediction maps against masks, or a checkpoint on a data set", """
    segkd eval --pred results/COD10K --gt data/COD10K/Mask --output cod10k.json
    segkd eval --pred preds/ --gt VOC2012/SegmentationClass --num-classes 21
    segkd eval --checkpoint runs/pspnet18/best.pt --set eval.scales=[0.5,0.75,1.0,1.25,1.5,1.75] --set eval.flip=true
""")(_eval_args)
def run_eval(args: argparse.Namespace) -> int:
    from segkd.metrics import format_table

    if args.pred or args.gt:
        if not (args.pred and args.gt):
            raise SystemExit("segkd eval: --pred and --gt go together")
        from segkd.metrics import evaluate_folders

        result = evaluate_folders(args.pred, args.gt, num_classes=args.num_classes, ignore_index=args.ignore_index)
        print(format_table(result["metrics"]))
        _write_json(args.output, result)
        return 0
    if not args.checkpoint:
        raise SystemExit("segkd eval: give --pred and --gt, or --checkpoint")
    from segkd.engine.run import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.config, args.overrides,
                                  save_dir=Path(args.save_dir) if args.save_dir else None)
    print(format_table(metrics))
    _write_json(args.output, metrics)
    return 0


# ------------------------------------------------------------------ predict
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by segkd train")
    p.add_argument("--input", required=True, help="an image, a folder of images, or a text file listing image paths")
    p.add_argument("--output", required=True, help="folder for the prediction maps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


@command("predict", "write prediction maps for images (grey PNG for binary; palette PNG + overlay/ for semantic)", """
    segkd predict --checkpoint runs/tiny_binary/best.pt --input photos/ --output preds/
""")(_predict_args)
def run_predict(args: argparse.Namespace) -> int:
    from segkd.engine.run import predict_images

    written = predict_images(args.checkpoint, args.input, args.output, args.overrides)
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0


# ------------------------------------------------------------------ methods
@command("methods", "list the distillation methods with their papers, taps and defaults", """
    segkd methods
""")(lambda p: None)
def run_methods(args: argparse.Namespace) -> int:
    from segkd.distill import METHODS, build_method

    def where(taps: dict[str, str]) -> str:
        return ", ".join(sorted(set(taps.values()))) or "model outputs only"

    for name in METHODS.names():
        cls = METHODS.get(name)
        method = build_method({"name": name})  # with its defaults: taps may depend on options
        print(f"{name}  [{cls.kind}, task: {cls.task}]")
        print(f"    paper:    {cls.paper}")
        teacher = where(method.teacher_taps) if method.needs_teacher else "no teacher"
        print(f"    taps:     student: {where(method.student_taps)}; teacher: {teacher}")
        terms = getattr(cls, "terms", {})
        described = (f"{k} ({v})" for k, v in terms.items()) if isinstance(terms, dict) else terms
        print(f"    terms:    {'; '.join(described) or 'not listed'}")
        print(f"    defaults: {cls.defaults()}")
    return 0


# ------------------------------------------------------------------ compare
def _compare_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)


@command("compare", "train (or reuse) several methods with the same budget and seeds; write tables and plots", """
    segkd compare demo_semantic
    segkd compare my_comparison.yaml --set seeds=[1,2,3]
""")(_compare_args)
def run_compare(args: argparse.Namespace) -> int:
    from segkd.engine.compare import compare, load_compare_config

    result = compare(load_compare_config(args.config, args.overrides))
    print(result["markdown"])
    for path in result["figures"]:
        print(f"figure: {path}")
    return 0


# ------------------------------------------------------------------ demo
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a data set folder in the binary (Image/, Mask/) or VOC layout; "
                   "default: a generated synthetic set")
    p.add_argument("--output", default="demo_runs", help="where runs, tables and plots go (default: demo_runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the comparison config, e.g. --set seeds=[1,2]")


@command("demo", "teacher, student alone and distilled student on synthetic (or your) data: table and plots", """
    segkd demo
    segkd demo --data data/COD10K
    segkd demo --data data/VOCdevkit/VOC2012 --output demo_voc
""")(_demo_args)
def run_demo(args: argparse.Namespace) -> int:
    from segkd.engine.compare import compare
    from segkd.engine.demo import demo_config

    cc = demo_config(args.data, Path(args.output), args.overrides)
    print(f"segkd demo: {', '.join(e.name for e in cc.entries)} → {cc.output_dir}")
    result = compare(cc)
    print(result["markdown"])
    for path in result["figures"]:
        print(f"figure: {path}")
    return 0


# ------------------------------------------------------------------ export
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by segkd train (the inference model is exported)")
    p.add_argument("--format", choices=["onnx", "torchscript", "both"], default="onnx")
    p.add_argument("--output", help="output file (default: next to the checkpoint, .onnx / .torchscript.pt)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="example input size (default: the test/crop size)")
    p.add_argument("--static", action="store_true", help="ONNX: fixed batch and spatial size")


@command("export", "export the trained inference model to ONNX (checked with onnxruntime) or TorchScript", """
    segkd export runs/tiny_binary/best.pt
    segkd export runs/kd_pspnet50_to_18_voc/best.pt --format both --size 473 473
""")(_export_args)
def run_export(args: argparse.Namespace) -> int:
    from segkd.engine.export import export_onnx, export_torchscript
    from segkd.engine.run import load_trained

    cfg, model, _ = load_trained(args.checkpoint)
    side = cfg.data.test_size if cfg.task == "binary" else cfg.data.crop_size
    size = tuple(args.size) if args.size else (side, side)
    stem = Path(args.checkpoint).with_suffix("")
    if args.format in ("onnx", "both"):
        path = Path(args.output) if args.output and args.format == "onnx" else stem.with_suffix(".onnx")
        info = export_onnx(model, path, input_size=size, dynamic=not args.static)
        print(f"wrote {path} (ONNX opset {info['opset']}; "
              f"onnxruntime vs PyTorch max |diff| {info['max_abs_diff']:.2e})")
    if args.format in ("torchscript", "both"):
        own = args.output and args.format == "torchscript"
        path = Path(args.output) if own else stem.with_suffix(".torchscript.pt")
        info = export_torchscript(model, path, input_size=size)
        print(f"wrote {path} (TorchScript; max |diff| vs eager {info['max_abs_diff']:.2e})")
    return 0


# ------------------------------------------------------------------ benchmark
def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="checkpoints, or registered model names with options as name:key=value,... "
                        "(e.g. pspnet:backbone=resnet18,num_classes=21)")
    p.add_argument("--sizes", type=int, nargs="+", default=[473], help="square input sides")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (both when CUDA is present)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--iters", type=int, default=10)


@command("benchmark", "inference latency, throughput and peak memory of models (teacher vs student)", """
    segkd benchmark pspnet50 pspnet18 --sizes 473 --batch-sizes 1 8
    segkd benchmark runs/teacher/best.pt runs/student/best.pt --device cuda --amp bf16
""")(_benchmark_args)
def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    from segkd.engine.benchmark import benchmark_models, format_rows
    from segkd.engine.run import load_trained
    from segkd.models import build_model

    models = {}
    for spec in args.models:
        if Path(spec).is_file():
            models[Path(spec).parent.name + "/" + Path(spec).name] = load_trained(spec, None, ["train.device=cpu"])[1]
        else:
            name, _, opts = spec.partition(":")
            kwargs = dict(kv.split("=", 1) for kv in opts.split(",") if kv)
            import yaml

            models[spec] = build_model(name, **{k: yaml.safe_load(v) for k, v in kwargs.items()}).eval()
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    for device in devices:
        rows = benchmark_models(models, [(s, s) for s in args.sizes], args.batch_sizes, device=device, iters=args.iters,
                                amp=None if args.amp == "none" else args.amp)
        print(format_rows(rows))
    return 0


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkd",
        description="Knowledge distillation for image segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, examples, add_args, _run) in COMMANDS.items():
        epilog = f"examples:\n{textwrap.indent(examples, '  ')}"
        p = sub.add_parser(name, help=summary, description=summary, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from segkd.config import ConfigError
    from segkd.data import DataError
    from segkd.engine.checkpoint import CheckpointError

    try:
        return COMMANDS[args.command][3](args)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError) as err:
        print(f"segkd {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
