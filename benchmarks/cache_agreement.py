"""How closely a teacher cache's carried maps match the live teacher on augmented training crops.

    python benchmarks/cache_agreement.py RUN_DIR TEACHER_RUN_DIR [--samples 20]

RUN_DIR is a run trained with ``distill.teacher.cache`` (its config.yaml names the cache);
TEACHER_RUN_DIR holds the teacher's last.pt. For each sample, drawn through the
training augmentation, prints the share of labelled pixels where the cached map carried through
the transform and the teacher run on the augmented crop predict the same class, and how often
each agrees with the label; and the share of each channel's spatial distribution (CWD's, softmax
over positions at temperature 4) that falls on pixels labelled ignore (padding, rotated-in
corners), for each. ``--map logits`` compares the cached ``logits`` map (a run whose methods read
``logits``) with the teacher's output resized to the crop's size.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segkd.config import load_config
from segkd.data import build_dataset
from segkd.engine.run import load_trained
from segkd.engine.teacher_cache import KEY_PREFIX, CacheReader, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("teacher_run", type=Path)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map", choices=("out", "logits"), default="out", help="the cached map to compare")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg = load_config(args.run / "config.yaml")
    _, teacher, device = load_trained(args.teacher_run / "last.pt")
    train_set = build_dataset(cfg.data, cfg.task, "train")
    folder = Path(cfg.distill.teacher.cache)
    train_set.extra_maps = CacheReader(folder, [args.map], read_manifest(folder)["align_corners"])
    step = max(1, len(train_set) // args.samples)
    both, cached_right, live_right, ignored, cached_mass, live_mass = [], [], [], [], [], []
    for index in range(0, len(train_set), step)[: args.samples]:
        sample = train_set[index]
        cached = sample[KEY_PREFIX + args.map].float()
        with torch.no_grad():
            live = teacher(sample["image"][None].to(device))["out"].cpu()
        live = F.interpolate(live, size=cached.shape[-2:], mode="bilinear")[0]
        labelled = sample["mask"] != cfg.data.ignore_index
        both.append((cached.argmax(0) == live.argmax(0))[labelled].float().mean().item())
        cached_right.append((cached.argmax(0) == sample["mask"])[labelled].float().mean().item())
        live_right.append((live.argmax(0) == sample["mask"])[labelled].float().mean().item())
        outside = ~labelled.flatten()
        ignored.append(outside.float().mean().item())
        for mass, logits in ((cached_mass, cached), (live_mass, live)):
            mass.append(torch.softmax(logits.flatten(1) / 4, 1)[:, outside].sum(1).mean().item())
    print(f"{len(both)} samples: cached = live on {np.mean(both):.3f} of labelled pixels; "
          f"= label: cached {np.mean(cached_right):.3f}, live {np.mean(live_right):.3f}; "
          f"{np.mean(ignored):.3f} of the pixels labelled ignore hold of each channel's spatial mass: "
          f"cached {np.mean(cached_mass):.3f}, live {np.mean(live_mass):.3f}")


if __name__ == "__main__":
    main()
