"""``segkd``: one command line for training, evaluating, predicting, comparing and exporting."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
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


class UsageError(Exception):
    """Options that do not go together; reported like argparse's own errors (exit code 2)."""


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
    from segkd.data import check_data
    from segkd.data.checks import DataSummary
    from segkd.engine.checks import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    summary = DataSummary()
    problems = check_data(cfg.data, cfg.task, summary=summary)
    for line in summary.lines(cfg.task):
        print(line)
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
    from segkd.engine.checks import load_run_config
    from segkd.engine.trainer import fit

    cfg = load_run_config(args.config, args.overrides)
    report = fit(cfg, resume=args.resume)
    from segkd.data.build import split_file_name
    from segkd.metrics import format_table

    split = split_file_name(cfg.data, cfg.task, "val")
    distilled = bool(report.get("teacher"))  # without a teacher the trained model is no "student"
    for role in ("teacher", "student"):
        if report.get(role):
            label = role if distilled else "model"
            print(f"\n{label}, final iteration, on split '{split}'\n" + format_table(report[role]))
    if report.get("selection"):
        print(f"result: {report['selection']}")
    print(f"outputs in {cfg.run_dir}")
    return 0


# ------------------------------------------------------------------ cache-teacher
@command("cache-teacher", "fill a run's teacher cache (distill.teacher.cache) ahead of training", """
    segkd cache-teacher kd_pspnet50_to_18_voc --set distill.teacher.cache=runs/cache_pspnet50_voc
    segkd train kd_pspnet50_to_18_voc --set distill.teacher.cache=runs/cache_pspnet50_voc
""")(_config_args)
def run_cache_teacher(args: argparse.Namespace) -> int:
    from segkd.engine.checks import load_run_config
    from segkd.engine.teacher_cache import fill_ahead

    cfg = load_run_config(args.config, args.overrides)
    manifest = fill_ahead(cfg)
    print(f"teacher cache {cfg.distill.teacher.cache}: the teacher's {manifest['maps']} for "
          f"{manifest['training_list']['count']} training images, ready")
    return 0


# ------------------------------------------------------------------ eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("score saved prediction maps")
    src.add_argument("--pred", help="folder of prediction maps (PNG); matched to masks by name")
    src.add_argument("--gt", help="folder of ground-truth masks")
    src.add_argument("--num-classes", type=int,
                     help="semantic label maps with this many classes (default: binary maps)")
    src.add_argument("--ignore-index", type=int, default=255)
    src.add_argument("--list", dest="names_file", metavar="FILE",
                     help="score only the names in this file (one per line, e.g. the data set's test.txt)")
    src.add_argument("--workers", type=int, metavar="N",
                     help="processes that score binary maps (default: one per core; 1: this process only)")
    mod = p.add_argument_group("score a trained model")
    mod.add_argument("--checkpoint", help="a checkpoint written by segkd train")
    mod.add_argument("--config", help="config for data and protocol (default: the one stored in the checkpoint)")
    mod.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mod.add_argument("--save-dir", help="also write the prediction maps here")
    mod.add_argument("--heads", action="store_true",
                     help="also score each prediction head a self-distillation run trained (its last.pt): "
                          "beside the student's output (what most of them distil into it)")
    p.add_argument("--output", help="write the metrics as JSON to this file")


@command("eval", "score prediction maps against masks, or a checkpoint on a data set", """
    segkd eval --pred results/COD10K --gt data/COD10K/Mask --output cod10k.json
    segkd eval --pred preds/ --gt VOC2012/SegmentationClass --num-classes 21
    segkd eval --checkpoint runs/pspnet18/best.pt --set eval.scales=[0.5,0.75,1.0,1.25,1.5,1.75] --set eval.flip=true
    segkd eval --checkpoint runs/fusion_pspsd/last.pt --heads   # each auxiliary head beside the output
""")(_eval_args)
def run_eval(args: argparse.Namespace) -> int:
    from segkd.metrics import format_table

    folder_opts = [f"--{n.replace('_', '-')}" for n in ("pred", "gt", "num_classes", "names_file", "workers")
                   if getattr(args, n) is not None]
    model_opts = [f"--{n.replace('_', '-')}" for n in ("checkpoint", "config", "save_dir") if getattr(args, n)]
    model_opts += ["--set"] if args.overrides else []
    model_opts += ["--heads"] if args.heads else []
    if folder_opts and model_opts:
        raise UsageError(f"{' '.join(folder_opts)} (score saved maps) and {' '.join(model_opts)} "
                         "(score a model) cannot be combined; run them as two commands")
    if args.output and Path(args.output).is_dir():  # found before scoring, not after it
        raise UsageError(f"--output {args.output} is a folder; give a file for the metrics, "
                         f"e.g. {Path(args.output) / 'metrics.json'}")
    if folder_opts:
        if not (args.pred and args.gt):
            raise UsageError("--pred and --gt go together")
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {args.workers}")
        if args.num_classes is not None and args.num_classes < 1:
            raise UsageError(f"--num-classes must be at least 1, got {args.num_classes} (leave it out for binary maps)")
        from segkd.metrics import evaluate_folders

        names = None
        if args.names_file:
            from segkd.data.readers import read_list_lines

            names = [line.split()[0] for _, line in read_list_lines(Path(args.names_file))]
        result = evaluate_folders(args.pred, args.gt, num_classes=args.num_classes, ignore_index=args.ignore_index,
                                  names=names, workers=args.workers)
        print(format_table(result["metrics"]))
        if result["resized"]:
            print(f"note: {result['resized']} of {result['num_images']} prediction(s) differ in size from "
                  "their mask and were resized (bilinear) before scoring")
        _write_json(args.output, result)
        return 0
    if not args.checkpoint:
        raise UsageError("give --pred and --gt, or --checkpoint")
    if args.heads:
        if args.save_dir:
            raise UsageError("--heads scores every head; --save-dir writes one model's maps: run them as two commands")
        from segkd.engine.run import evaluate_heads

        heads = evaluate_heads(args.checkpoint, args.config, args.overrides)
        print(format_table({"head": {name: {k: v for k, v in m.items() if not isinstance(v, dict)}
                                     for name, m in heads.items()}}))
        _write_json(args.output, heads)
        return 0
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
    segkd predict --checkpoint runs/tiny_binary/last.pt --input photos/ --output preds/
""")(_predict_args)
def run_predict(args: argparse.Namespace) -> int:
    from segkd.engine.run import predict_images

    skipped: list[str] = []
    written = predict_images(args.checkpoint, args.input, args.output, args.overrides, skipped=skipped)
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ methods
@command("methods", "list the distillation methods with their papers, taps and defaults", """
    segkd methods
""")(lambda p: None)
def run_methods(args: argparse.Namespace) -> int:
    from segkd.distill import METHODS, build_method
    from segkd.distill.references import REFERENCES

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
        if getattr(cls, "includes", ""):  # a named full recipe: which methods it runs, at which weights
            print(f"    includes: {cls.includes}")
        print(f"    reference: {REFERENCES.get(name, 'not listed')}")
        print(f"    defaults: {cls.defaults()}")
    return 0


# ------------------------------------------------------------------ config
def _config_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["show", "keys"],
                   help="show NAME: the config NAME resolves to, as YAML (bases, fragments and --set applied); "
                        "keys: every config key with its type, default (or NAME's value) and help")
    p.add_argument("name", nargs="?", help="a config file, shipped config or composition (byot_camo, fusion+camo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


@command("config", "print a config as it resolves (YAML), or every config key with its type, default and help", """
    segkd config show byot_camo                        # the resolved YAML: what segkd train byot_camo runs
    segkd config show fusion+camo+tfkd --set train.epochs=3
    segkd config show compare_sbg                      # a comparison config (kind: compare)
    segkd config keys                                  # every key, its type, default and help
    segkd config keys tiny_binary                      # ... with that config's values
""")(_config_show_args)
def run_config_show(args: argparse.Namespace) -> int:
    import yaml

    from segkd.config import describe_keys, read_config
    from segkd.engine.checks import load_run_config

    if args.action == "show" and args.name:
        if read_config(args.name, fill=False)[0] == "compare":  # vars are filled after --set, by the loaders
            from segkd.commands.compare import load_compare_config

            resolved = {"kind": "compare", **load_compare_config(args.name, args.overrides).model_dump(mode="json")}
        else:
            resolved = {"kind": "run", **load_run_config(args.name, args.overrides).to_dict()}
        print(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110),
              end="")
        return 0
    values = load_run_config(args.name, args.overrides).to_dict() if args.name else None
    rows = describe_keys(values=values)
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'key':<{widths[0]}}  {'type':<{widths[1]}}  {'value' if values else 'default'}  — help")
    for key, kind, value, help_text in rows:
        print(f"{key:<{widths[0]}}  {kind:<{widths[1]}}  {value}" + (f"  — {help_text}" if help_text else ""))
    return 0


# ------------------------------------------------------------------ compare
def _compare_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    _retrain_arg(p)
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the tables and plots of the runs finished so far "
                        "(while a long comparison goes on)")
    p.add_argument("--only", nargs="+", metavar="ENTRY",
                   help="train these entries alone (and those they wait for); the tables show every finished run")


def _retrain_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retrain", action="store_true",
                   help="train again the runs whose stored config differs from the comparison's "
                        "(the old run folders are kept, renamed)")


@command("compare", "train (or reuse) several methods with the same budget and seeds; write tables and plots", """
    segkd compare demo_semantic
    segkd compare my_comparison.yaml --set seeds=[1,2,3]
    segkd compare my_comparison.yaml --report       # the table so far, while its runs go on
    segkd compare my_comparison.yaml --only kd cwd  # train these rows (and their teacher) alone
""")(_compare_args)
def run_compare(args: argparse.Namespace) -> int:
    from segkd.commands.compare import compare, load_compare_config

    if args.report and args.retrain:
        raise UsageError("--report trains nothing and --retrain trains again: give one of them")
    if args.report and args.only:
        raise UsageError("--report trains nothing and --only says what to train: give one of them")
    result = compare(load_compare_config(args.config, args.overrides), retrain=args.retrain, report_only=args.report,
                     only=args.only)
    print(result["markdown"])
    for path in result["figures"]:
        print(f"figure: {path}")
    return 0


# ------------------------------------------------------------------ demo
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a data set folder in the binary (Image/, Mask/) or VOC layout; "
                   "default: a generated synthetic set")
    p.add_argument("--task", choices=["semantic", "binary"],
                   help="semantic: teacher → student distillation (the default); binary: self-distillation "
                        "of an object-segmentation network against it alone at equal epochs and equal compute; "
                        "with --data, the set's layout gives the task")
    p.add_argument("--output", default="demo_runs", help="where runs, tables and plots go (default: demo_runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the comparison config, e.g. --set seeds=[1,2]")


@command("demo", "does distillation pay? student alone against distilled, 3 seeds, on synthetic (or your) data", """
    segkd demo
    segkd demo --task binary
    segkd demo --data data/COD10K
    segkd demo --data data/VOCdevkit/VOC2012 --output demo_voc
""")(_demo_args)
def run_demo(args: argparse.Namespace) -> int:
    from segkd.commands.compare import compare
    from segkd.commands.demo import demo_config, expected_seconds

    cc = demo_config(args.data, Path(args.output), args.overrides, args.task)
    runs = sum(len(cc.seeds_of(e)) for e in cc.entries)
    print(f"segkd demo: {', '.join(e.name for e in cc.entries)} ({runs} runs, {cc.jobs} at a time) → {cc.output_dir}")
    if args.data is None:
        minutes, seconds = divmod(round(expected_seconds(cc, args.task or "semantic")), 60)
        print(f"expected: about {minutes} min {seconds:02d} s on a 2-core CPU like the README's; "
              "other CPUs, and other jobs running, change it", flush=True)
    # a demo folder from an older segkd holds runs of another demo: they are moved aside (kept, renamed)
    # and trained again, rather than the demo stopping to ask for --retrain
    result = compare(cc, retrain=True)
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
    segkd export runs/tiny_binary/last.pt
    segkd export runs/kd_pspnet50_to_18_voc/best.pt --format both --size 473 473
""")(_export_args)
def run_export(args: argparse.Namespace) -> int:
    from segkd.commands.export import export_onnx, export_torchscript, onnx_metadata
    from segkd.engine.run import load_trained

    if args.output and Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise UsageError(f"--output {args.output} is the checkpoint being exported; choose another file")
    if args.size and min(args.size) < 1:
        raise UsageError(f"--size {args.size[0]} {args.size[1]}: height and width must be at least 1 pixel")
    cfg, model, _ = load_trained(args.checkpoint)
    side = cfg.data.test_size if cfg.task == "binary" else cfg.data.crop_size
    size = tuple(args.size) if args.size else (side, side)
    stem = Path(args.checkpoint).with_suffix("")
    if args.format in ("onnx", "both"):
        path = Path(args.output) if args.output and args.format == "onnx" else stem.with_suffix(".onnx")
        with _blame_export_size(size, given=bool(args.size)):
            info = export_onnx(model, path, input_size=size, dynamic=not args.static, metadata=onnx_metadata(cfg))
        print(f"wrote {path} (ONNX opset {info['opset']}; "
              f"onnxruntime vs PyTorch max |diff| {info['max_abs_diff']:.2e})")
    if args.format in ("torchscript", "both"):
        own = args.output and args.format == "torchscript"
        path = Path(args.output) if own else stem.with_suffix(".torchscript.pt")
        with _blame_export_size(size, given=bool(args.size)):
            info = export_torchscript(model, path, input_size=size)
        print(f"wrote {path} (TorchScript; max |diff| vs eager {info['max_abs_diff']:.2e})")
    return 0


@contextlib.contextmanager
def _blame_export_size(size: tuple[int, int], given: bool) -> Iterator[None]:
    """A size the model cannot be exported at is the --size argument's fault (or the config's, by default)."""
    from segkd.commands.export import ExportSizeError

    try:
        yield
    except ExportSizeError as err:
        raise UsageError(f"{'--size' if given else 'the default size'} {size[0]} {size[1]}: {err}") from err


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

    from segkd.commands.benchmark import benchmark_models, format_rows
    from segkd.engine.run import load_trained
    from segkd.models import MODELS, build_model

    models = {}
    for spec in args.models:
        name, _, opts = spec.partition(":")
        if Path(spec).is_file():
            models[Path(spec).parent.name + "/" + Path(spec).name] = load_trained(spec, None, ["train.device=cpu"])[1]
        elif name in MODELS:
            import yaml

            pairs = [kv.split("=", 1) for kv in opts.split(",") if kv]
            if any(len(kv) != 2 for kv in pairs):
                raise UsageError(f"{spec}: options are written name:key=value,key=value")
            from segkd.config import blame_config

            with blame_config(spec):
                models[spec] = build_model(name, **{k: yaml.safe_load(v) for k, v in pairs}).eval()
        elif Path(spec).suffix or "/" in spec:
            raise FileNotFoundError(f"{spec}: no such checkpoint file")
        else:
            raise UsageError(f"'{spec}' is neither a checkpoint file nor a registered model "
                             f"({', '.join(MODELS.names())})")
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    for device in devices:
        rows = benchmark_models(models, [(s, s) for s in args.sizes], args.batch_sizes, device=device, iters=args.iters,
                                amp=None if args.amp == "none" else args.amp)
        print(format_rows(rows))
    return 0


# ------------------------------------------------------------------ main
# Commands that open checkpoints (a model, a teacher, a run to resume) take --trust-checkpoint.
LOADS_CHECKPOINTS = {"train", "cache-teacher", "eval", "predict", "compare", "demo", "export", "benchmark"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkd",
        description="Knowledge distillation for image segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debug_help = "show the full traceback of an error (also: environment variable SEGKD_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, examples, add_args, _run) in COMMANDS.items():
        epilog = f"examples:\n{textwrap.indent(examples, '  ')}"
        p = sub.add_parser(name, help=summary, description=summary, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        if name in LOADS_CHECKPOINTS:
            p.add_argument("--trust-checkpoint", action="store_true",
                           help="the checkpoints this command opens come from a source you trust: let them "
                                "hold any Python object (unpickling such a file can run code it carries; "
                                "by default only tensors and plain values are read)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _mount(path: Path) -> str:
    """``DEVICE (mounted at DIR)`` for the file system holding ``path``, as well as it can be told."""
    import os

    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        while p != p.parent and p.parent.stat().st_dev == dev:
            p = p.parent
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == str(p):
                return f"{fields[0]} (mounted at {p})"
    except OSError:
        pass
    return f"the device holding {p}" if os.path.isabs(str(p)) else "the device"


def _explain_os_error(err: OSError) -> str | None:
    """One line for the output errors a user can fix (full disk, read-only or forbidden folder)."""
    import errno

    path = Path(err.filename) if err.filename else None
    where = f"while writing {path}" if path else "while writing an output file"
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        device = _mount(path) if path else "the device"
        return f"no space left on {device} {where}; free some space or choose another output_dir"
    if err.errno == errno.EROFS:
        return f"{path or 'the output folder'}: read-only file system; choose another output_dir (--set output_dir=...)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{path or 'an output file'}: permission denied; choose a folder you can write to (--set output_dir=...)"
    return None


# The errors a user can fix, by the module that defines them.
_USER_ERRORS = {
    "segkd.config": "ConfigError",
    "segkd.data.readers": "DataError",
    "segkd.engine.checkpoint": "CheckpointError",
    "segkd.engine.errors": "NonFiniteLossError",
}


def _user_error_types() -> tuple[type[BaseException], ...]:
    # An error whose module was never imported cannot have been raised: looking the classes up
    # among the loaded modules spares a light command (eval --pred) from importing torch to fail.
    return tuple(getattr(sys.modules[module], name) for module, name in _USER_ERRORS.items()
                 if module in sys.modules)


def explain(err: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` for an error a user caused, or None for a bug (shown in full)."""
    if isinstance(err, UsageError):
        return str(err), 2
    if isinstance(err, KeyboardInterrupt):
        return str(err) or "interrupted", 130
    if isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, FileExistsError)):
        message = _explain_os_error(err)
        return (message, 1) if message else None
    if isinstance(err, (*_user_error_types(), FileNotFoundError, FileExistsError)):
        if isinstance(err, OSError) and err.filename:  # raised by the OS: the message lacks the name
            return f"{err.filename}: {(err.strerror or 'no such file or directory').lower()}", 1
        return _without_worker_traceback(str(err)), 1
    return None


def _without_worker_traceback(message: str) -> str:
    """A data loader worker re-raises an error with its traceback in the text: keep the message."""
    if "in DataLoader worker process" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    prefix, sep, rest = last.partition(": ")  # "segkd.data.readers.DataError: <message>"
    return rest if sep and " " not in prefix else last


def _debug_wanted(args: argparse.Namespace) -> bool:
    import os

    return bool(getattr(args, "debug", False)) or os.environ.get("SEGKD_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error the user can fix ends in a short message and a non-zero exit code
    (a traceback only with ``--debug`` or ``SEGKD_DEBUG=1``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if getattr(args, "trust_checkpoint", False):
            from segkd.engine.checkpoint import trust_checkpoints

            trust_checkpoints()
        return COMMANDS[args.command][3](args)
    except (Exception, KeyboardInterrupt) as err:
        if _debug_wanted(args):
            raise
        explained = explain(err)
        if explained is None:
            raise
        message, code = explained
        print(f"segkd {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
