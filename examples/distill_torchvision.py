"""Distil a torchvision segmentation model from a teacher of another architecture, in a plain loop.

The student is torchvision's LR-ASPP MobileNetV3 (its forward returns an ``OrderedDict`` with
``"out"``); the teacher is a network of our own that returns a plain tensor at a quarter of the
input resolution. Neither needs a wrapper: ``segkd.Distiller`` reads both outputs, upsamples the
teacher's, taps both classifiers by module path, and returns the distillation terms that we add
to our own cross-entropy. Data: segkd's generated synthetic set (textured shapes, 4 classes).

    python examples/distill_torchvision.py                      # about a minute on a laptop CPU
    python examples/distill_torchvision.py --steps 5 --teacher-steps 5 --image-size 32   # a smoke run
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

import segkd

IGNORE = 255


class SmallFCN(nn.Module):
    """A teacher of our own: a plain CNN returning B×C×H/4×W/4 class scores as a tensor."""

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width, 2), block(width, width), block(width, width, 2),
                                      block(width, width, dilation=2), block(width, width, dilation=4))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def batches(loader: DataLoader, steps: int):
    """``steps`` batches, cycling over the loader."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)


def train_teacher(teacher: nn.Module, loader: DataLoader, steps: int, lr: float) -> None:
    """Our own supervised loop for the teacher (the logits are upsampled to the labels' size)."""
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=lr)
    teacher.train()
    for batch in batches(loader, steps):
        logits = F.interpolate(teacher(batch["image"]), size=batch["mask"].shape[-2:], mode="bilinear")
        loss = F.cross_entropy(logits, batch["mask"], ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/synthetic-example", help="where the synthetic set is generated")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--teacher-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60, help="distillation steps of the student")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    data = {"layout": "synthetic", "root": args.root, "crop_size": args.image_size, "scale_range": (0.75, 1.25),
            "synthetic": {"num_train": args.num_train, "num_val": args.num_val, "image_size": args.image_size}}
    train_set = segkd.build_dataset("semantic", "train", **data)
    val_set = segkd.build_dataset("semantic", "val", **data)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    num_classes = 4  # the synthetic set's default: background and three shapes

    teacher = SmallFCN(num_classes)
    train_teacher(teacher, loader, args.teacher_steps, lr=3e-3)
    student = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    for module in student.modules():  # MobileNetV3's BatchNorm momentum (0.01) is for long runs
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1

    # CWD taps each model's classifier, by module path; logits KD then reads them too.
    distiller = segkd.Distiller(student, teacher, methods=["logits_kd", {"name": "cwd", "temperature": 4.0}],
                                student_points={"logits": "classifier"}, teacher_points={"logits": "classifier"},
                                example=next(iter(loader))["image"])
    optimizer = torch.optim.AdamW([*student.parameters(), *distiller.parameters()], lr=args.lr)
    history = []
    student.train()
    with distiller:
        for step, batch in enumerate(batches(loader, args.steps)):
            images, masks = batch["image"], batch["mask"]
            out = student(images)                                              # our forward
            task = F.cross_entropy(out["out"], masks, ignore_index=IGNORE)   # our task loss
            terms = distiller(out, images, masks)                              # + distillation
            optimizer.zero_grad()
            (task + sum(terms.values())).backward()
            optimizer.step()
            history.append({"task": task.item(), **{k: v.item() for k, v in terms.items()}})
            if step % 10 == 0 or step == args.steps - 1:
                print(f"step {step:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))

    result = {"history": history, "teacher_mIoU": segkd.evaluate(teacher, val_set)["mIoU"],
              "student_mIoU": segkd.evaluate(student, val_set)["mIoU"], "seconds": time.perf_counter() - started}
    print(f"teacher mIoU {result['teacher_mIoU']:.3f}, distilled student mIoU {result['student_mIoU']:.3f}, "
          f"{result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
