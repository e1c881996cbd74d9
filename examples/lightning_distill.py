"""A PyTorch Lightning ``LightningModule`` with a ``segkd.Distiller`` inside.

Lightning keeps its loop, devices and logging; the module's ``training_step`` adds the
distillation terms to its own loss, and ``configure_optimizers`` gives the distiller's learnable
parts (here CWD's channel mapping: the teacher is wider than the student) to the optimiser.
The distiller is a sub-module, so Lightning moves it to the device with the student; the
frozen teacher stays in eval mode even when Lightning puts the module in training mode.

Needs the optional extra: ``pip install "segkd[lightning]"``.

    python examples/lightning_distill.py                        # a few minutes on a CPU
    python examples/lightning_distill.py --steps 3 --teacher-steps 3 --image-size 32   # a smoke run
"""
from __future__ import annotations

import argparse
import itertools
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import segkd

IGNORE = 255


class DistilledSegmentation(L.LightningModule):
    """Trains ``student`` on cross-entropy plus the distillation terms from ``teacher``."""

    def __init__(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor, lr: float) -> None:
        super().__init__()
        self.student, self.teacher, self.lr = student, teacher, lr
        # CWD between the classifiers' inputs: 128 teacher channels, 64 student ones, so CWD
        # learns a mapping, built here from one example batch (before configure_optimizers runs)
        self.distiller = segkd.Distiller(student, teacher, methods=[
            {"name": "logits_kd", "at": "out"}, {"name": "cwd", "at": "head", "weight": 1.0}], example=example)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]
        out = self.student(images)
        task = F.cross_entropy(out["out"], masks, ignore_index=IGNORE)
        terms = self.distiller(out, images, masks)
        self.log_dict({"task": task, **terms}, prog_bar=True)
        return task + sum(terms.values())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.distiller.param_groups()
        return torch.optim.AdamW([{"params": self.student.parameters()},
                                  {"params": groups["head"] + groups["backbone"]}], lr=self.lr)

    def on_train_end(self) -> None:
        self.distiller.close()  # the student leaves without hooks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/synthetic-example", help="where the synthetic set is generated")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--teacher-steps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    L.seed_everything(args.seed, verbose=False)
    started = time.perf_counter()

    data = {"layout": "synthetic", "root": args.root, "crop_size": args.image_size, "scale_range": (0.75, 1.25),
            "synthetic": {"num_train": args.num_train, "num_val": args.num_val, "image_size": args.image_size}}
    train_set = segkd.build_dataset("semantic", "train", **data)
    val_set = segkd.build_dataset("semantic", "val", **data)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)

    # segkd's own models: a wider PSPNet teacher (trained briefly here) and a narrower student
    teacher = segkd.build_model("pspnet", backbone="resnet18", num_classes=4, output_stride=8, head_channels=128)
    student = segkd.build_model("pspnet", backbone="resnet18", num_classes=4, output_stride=8, head_channels=64)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    teacher.train()
    for batch in itertools.islice(itertools.cycle(loader), args.teacher_steps):
        loss = F.cross_entropy(teacher(batch["image"])["out"], batch["mask"], ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    module = DistilledSegmentation(student, teacher, next(iter(loader))["image"], args.lr)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen teacher's
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, loader)
    logged = {k: v.item() for k, v in trainer.logged_metrics.items()}
    result = {"logged": logged, "teacher_mIoU": segkd.evaluate(teacher, val_set)["mIoU"],
              "student_mIoU": segkd.evaluate(student, val_set)["mIoU"], "seconds": time.perf_counter() - started}
    print(f"last step: {logged}; teacher mIoU {result['teacher_mIoU']:.3f}, "
          f"distilled student mIoU {result['student_mIoU']:.3f}, {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
