"""Self-distillation of a binary (foreground / background) model of our own, in a plain loop.

No teacher: BYOT (Be Your Own Teacher) grows prediction heads on the network's shallow stages,
which learn from the mask and from the network's own final prediction and deepest feature. The
heads live in the distiller, not in our model: they train with it and are never exported. Our
model names no stages the way segkd's models do, so ``student_points`` says which of its
modules BYOT's ``stage1`` .. ``stage4`` are. Data: segkd's synthetic binary set.

    python examples/self_distill_binary.py
    python examples/self_distill_binary.py --steps 4 --image-size 64      # a smoke run
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import segkd


class TinyUNet(nn.Module):
    """Four encoder stages (strides 2 to 16) and a light decoder; returns B×1×H×W logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
                                 nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))

        widths = [width, width * 2, width * 4, width * 8]
        self.enc1, self.enc2 = stage(3, widths[0]), stage(widths[0], widths[1])
        self.enc3, self.enc4 = stage(widths[1], widths[2]), stage(widths[2], widths[3])
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in widths)
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, h = [], x
        for encoder in (self.enc1, self.enc2, self.enc3, self.enc4):
            h = encoder(h)
            features.append(h)
        fused = 0
        for lateral, feature in zip(self.lateral, features):
            fused = fused + F.interpolate(lateral(feature), size=features[0].shape[-2:], mode="bilinear")
        return F.interpolate(self.head(fused), size=x.shape[-2:], mode="bilinear")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/synthetic-binary-example", help="where the synthetic set is made")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    data = {"layout": "synthetic", "root": args.root, "train_size": args.image_size, "test_size": args.image_size,
            "multiscale_sizes": [], "synthetic": {"num_train": args.num_train, "num_val": args.num_val,
                                                  "image_size": args.image_size}}
    train_set = segkd.build_dataset("binary", "train", **data)
    val_set = segkd.build_dataset("binary", "val", **data)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)

    model = TinyUNet()
    distiller = segkd.Distiller(model, methods=[{"name": "byot", "head_channels": 16}],
                                student_points={"stage1": "enc1", "stage2": "enc2", "stage3": "enc3",
                                                "stage4": "enc4"},
                                example=next(iter(loader))["image"])
    groups = distiller.param_groups()  # BYOT's heads are new layers: the "head" group
    optimizer = torch.optim.AdamW([{"params": model.parameters()}, {"params": groups["head"]},
                                   {"params": groups["backbone"]}], lr=args.lr)
    history = []
    model.train()
    with distiller:
        for step, batch in enumerate(itertools.islice(itertools.cycle(loader), args.steps)):
            images, masks = batch["image"], batch["mask"]
            logits = model(images)
            task = F.binary_cross_entropy_with_logits(logits, masks)
            terms = distiller(logits, images, masks)  # BYOT's heads read the masks too
            optimizer.zero_grad()
            (task + sum(terms.values())).backward()
            optimizer.step()
            history.append({"task": task.item(), **{k: v.item() for k, v in terms.items()}})
            if step % 10 == 0 or step == args.steps - 1:
                print(f"step {step:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))

    metrics = segkd.evaluate(model, val_set)
    result = {"history": history, "MAE": metrics["MAE"], "maxFm": metrics["maxFm"],
              "method_parameters": sum(p.numel() for p in distiller.parameters()),
              "model_parameters": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - started}
    print(f"MAE {result['MAE']:.4f}, max F-measure {result['maxFm']:.4f}; the model keeps its "
          f"{result['model_parameters']} parameters (BYOT's heads: {result['method_parameters']}), "
          f"{result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
