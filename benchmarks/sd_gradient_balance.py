"""How much each self-distillation method adds to the gradient the student's own parameters get.

An SGD step is the learning rate times the gradient, so a method whose terms double the gradient
of the shared network trains it, in effect, at twice the learning rate its baseline was tuned for.
For every entry of a binary ``segkd compare`` config (its first seed's resolved run), on the same
training batches (training augmentation, one fixed size), this prints for the student's backbone
and head: the gradient norm of the task loss alone (as weighted in the entry), of the whole loss,
the whole loss's over the baseline entry's task loss's, and the cosine between the task loss's
gradient and the methods' (whole minus task).

Two states of the weights:

- ``init``: the run's starting point (ImageNet backbone, new head and method parts; the same seed
  for every entry, so every row starts from the same student), the methods at full strength
  (``set_progress(1.0)``: ramps and late starts done);
- ``trained``: the entry's trained run (``last.pt``: the student and the methods' parts), at the end.

Examples:

    python benchmarks/sd_gradient_balance.py compare_sd_sod300 --data path/to/sod300
    python benchmarks/sd_gradient_balance.py compare_sd_sod300 --data path/to/sod300 \\
        --runs results/compare_sd_sod300 --state trained --json balance.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from segkd.commands.compare import load_compare_config, run_configs
from segkd.data import build_dataset
from segkd.data.transforms import resize_batch
from segkd.engine import builders
from segkd.engine.checkpoint import load_model_state, read_checkpoint
from segkd.engine.distiller import Distiller
from segkd.engine.trainer import training_losses


def batches(cfg, count: int, side: int) -> list[dict]:
    """``count`` training batches (augmented, a fixed order) resized to ``side`` px."""
    torch.manual_seed(0)
    loader = DataLoader(build_dataset(cfg.data, cfg.task, "train"), batch_size=cfg.data.batch_size, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(0))
    out = []
    for batch in loader:
        out.append(resize_batch(batch, side))
        if len(out) == count:
            return out
    return out


def flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> torch.Tensor:
    """The gradients as one vector, zeros for a parameter the loss does not reach."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def measure(cfg, state: str, data: list[dict]) -> dict[str, float]:
    """Mean over ``data`` of the gradient norms of the task loss and the whole loss, per group."""
    torch.manual_seed(cfg.train.seed)
    student = builders.build_student(cfg)
    methods = builders.build_methods(cfg)
    teacher = None
    if builders.needs_teacher(methods):
        teacher = builders.build_teacher(cfg.distill.teacher, cfg, torch.device("cpu"))
    distiller = Distiller(student, teacher, methods, ignore_index=cfg.data.ignore_index, example=data[0]["image"][:2])
    if state == "trained":
        checkpoint = cfg.run_dir / "last.pt"
        ckpt = read_checkpoint(checkpoint)
        load_model_state(student, ckpt["model"], checkpoint)
        distiller.methods.load_state_dict(ckpt.get("methods", {}))
    distiller.set_progress(1.0)
    student.train()
    groups = student.param_groups() if hasattr(student, "param_groups") else {"head": list(student.parameters())}
    sums: dict[str, float] = {}
    with distiller:
        for batch in data:
            losses = training_losses(cfg, student, distiller, batch, torch.device("cpu"))
            total = sum(losses.values())
            for group, params in groups.items():
                params = [p for p in params if p.requires_grad]
                task = flat(torch.autograd.grad(losses["task"], params, retain_graph=True, allow_unused=True), params)
                whole = flat(torch.autograd.grad(total, params, retain_graph=True, allow_unused=True), params)
                extra = whole - task
                cosine = F.cosine_similarity(task, extra, dim=0) if extra.norm() > 0 else torch.tensor(0.0)
                for key, value in ((f"{group}_task", task.norm()), (f"{group}_whole", whole.norm()),
                                   (f"{group}_cos", cosine)):
                    sums[key] = sums.get(key, 0.0) + float(value) / len(data)
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("compare", help="a binary segkd compare config (name or path)")
    parser.add_argument("--data", required=True, help="the data set's folder (data.root)")
    parser.add_argument("--runs", type=Path, help="the comparison's output_dir, for --state trained")
    parser.add_argument("--state", choices=("init", "trained"), default="init")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--size", type=int, default=224, help="side of the training batches (px)")
    parser.add_argument("--entries", nargs="*", help="only these entries (default: every entry)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = [f"set=[data.root={args.data}]"] + ([f"output_dir={args.runs}"] if args.runs else [])
    cc = load_compare_config(args.compare, overrides)
    configs = run_configs(cc)
    rows, data = {}, None
    print(f"| entry ({args.state}) | backbone: task | whole | × baseline | cos(task, SD) "
          "| head: task | whole | × baseline |")
    print("|---|---|---|---|---|---|---|---|")
    # the baseline first: every row's whole gradient is given over the baseline's (a method's own task
    # term may be weighted below 1: Tf-KD's 0.05, BYOT's 0.9)
    ordered = sorted((e for e in cc.entries if e.matched_time is None), key=lambda e: e.name != cc.baseline)
    for entry in ordered:
        if args.entries and entry.name not in args.entries and entry.name != cc.baseline:
            continue
        cfg = configs[(entry.name, cc.seeds_of(entry)[0])]
        data = data or batches(cfg, args.batches, args.size)
        m = rows[entry.name] = measure(cfg, args.state, data)
        base = rows[cc.baseline]
        cells = [f"{m['backbone_task']:.3f}", f"{m['backbone_whole']:.3f}",
                 f"{m['backbone_whole'] / base['backbone_task']:.2f}", f"{m['backbone_cos']:+.2f}",
                 f"{m['head_task']:.3f}", f"{m['head_whole']:.3f}", f"{m['head_whole'] / base['head_task']:.2f}"]
        print(f"| {entry.name} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
