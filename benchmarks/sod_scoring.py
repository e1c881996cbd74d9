"""Speed of SOD folder scoring: `segkd eval --pred DIR --gt DIR` against a plain pysodmetrics loop.

Both are timed as whole processes (start-up and imports included, as a user meets them) on the
same maps: for each mask of a binary data set (its test list, then its train list, up to
``--images``) a prediction map is made from the mask by a deterministic shift, blur and noise and
written to a temporary folder beside links to the masks. The runs are interleaved (A B A B ...)
after one untimed warm-up of each, so that a change in the machine's load hits both alike; the
speed-up is the median of the pairwise ratios plain / segkd. The warm-up runs also check that
both print the same numbers.

    python benchmarks/sod_scoring.py                      # ../shared/data/sod300, 300 maps, 5 pairs
    python benchmarks/sod_scoring.py --repeats 9 --workers 2
    python benchmarks/sod_scoring.py --data /data/DUTS-TE --images 5000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
PLAIN_LOOP = Path(__file__).with_name("pysod_loop.py")


def mask_names(data: Path, count: int) -> list[str]:
    """Names from ``test.txt`` then ``train.txt``, the first ``count`` of them."""
    names: list[str] = []
    for split in ("test.txt", "train.txt"):
        if (data / split).is_file():
            names += [line.split()[0] for line in (data / split).read_text().splitlines() if line.strip()]
    if len(names) < count:
        raise SystemExit(f"{data}: test.txt and train.txt list {len(names)} names, fewer than --images {count}")
    return names[:count]


def fake_prediction(mask: np.ndarray, seed: int) -> np.ndarray:
    """A plausible grey prediction map: the mask shifted a little, blurred and noised."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(mask, tuple(rng.integers(-8, 9, size=2)), axis=(0, 1))
    blurred = Image.fromarray(shifted).filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 8.0))))
    noise = rng.normal(0, rng.uniform(0, 25), mask.shape)
    noisy = np.asarray(blurred, dtype=np.float64) * rng.uniform(0.6, 1.0) + noise
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def make_folders(data: Path, count: int, root: Path) -> tuple[Path, Path]:
    """``root/pred`` with one map per mask and ``root/gt`` linking to exactly those masks."""
    pred_dir, gt_dir = root / "pred", root / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for seed, name in enumerate(mask_names(data, count)):
        mask_path = data / "Mask" / f"{name}.png"
        mask = np.asarray(Image.open(mask_path).convert("L"))
        Image.fromarray(fake_prediction(mask, seed)).save(pred_dir / f"{name}.png")
        (gt_dir / f"{name}.png").symlink_to(mask_path.resolve())
    return pred_dir, gt_dir


class Run(NamedTuple):
    wall_s: float
    cpu_s: float  # user + system time of the process and of the workers it waited for
    stdout: str


def run_timed(command: list[str], env: dict[str, str]) -> Run:
    """Time one process: wall clock, and CPU time (which other jobs on the machine sway less)."""
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return Run(elapsed, _children_cpu_s() - cpu_before, done.stdout)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "sod300",
                        help="a binary data set: Mask/*.png with test.txt / train.txt (default: ../shared/data/sod300)")
    parser.add_argument("--images", type=int, default=300, help="how many maps to score (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (default 5)")
    parser.add_argument("--workers", type=int, help="passed to segkd eval (default: its own, one per core)")
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args = parser.parse_args()

    # Time this checkout's segkd, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="sod_scoring_") as tmp:
        pred_dir, gt_dir = make_folders(args.data, args.images, Path(tmp))
        segkd_eval = [sys.executable, "-m", "segkd", "eval", "--pred", str(pred_dir), "--gt", str(gt_dir)]
        segkd_eval += ["--workers", str(args.workers)] if args.workers else []
        plain_loop = [sys.executable, str(PLAIN_LOOP), str(pred_dir), str(gt_dir)]

        # Untimed warm-up (page cache, bytecode), which also compares the two sets of numbers.
        check_file = Path(tmp) / "segkd.json"
        run_timed([*segkd_eval, "--output", str(check_file)], env)
        segkd_numbers = json.loads(check_file.read_text())["metrics"]
        plain_numbers = json.loads(run_timed(plain_loop, env).stdout)
        largest_difference = max(abs(segkd_numbers[key] - plain_numbers[key]) for key in plain_numbers)

        load_before = os.getloadavg()[0]
        pairs = []
        for _ in range(args.repeats):
            pairs.append((run_timed(segkd_eval, env), run_timed(plain_loop, env)))
        load_after = os.getloadavg()[0]

    report(args, segkd_eval, plain_loop, pairs, largest_difference, (load_before, load_after))
    if args.json:
        args.json.write_text(json.dumps({
            "images": args.images, "cores": available_cores(), "load_average": [load_before, load_after],
            "segkd_eval": shlex.join(segkd_eval), "plain_loop": shlex.join(plain_loop),
            "segkd_wall_s": [a.wall_s for a, _ in pairs], "plain_wall_s": [b.wall_s for _, b in pairs],
            "segkd_cpu_s": [a.cpu_s for a, _ in pairs], "plain_cpu_s": [b.cpu_s for _, b in pairs],
            "speedup_median": statistics.median(b.wall_s / a.wall_s for a, b in pairs),
            "largest_difference": largest_difference}, indent=2))


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def report(args: argparse.Namespace, segkd_eval: list[str], plain_loop: list[str], pairs: list[tuple[Run, Run]],
           largest_difference: float, load: tuple[float, float]) -> None:
    ratios = [plain.wall_s / segkd.wall_s for segkd, plain in pairs]
    print(f"SOD scoring of {args.images} maps (masks of {args.data}, predictions made from them)")
    print(f"machine: {platform.machine()}, {available_cores()} cores available ({os.cpu_count()} in all), "
          f"Python {platform.python_version()}; load average {load[0]:.2f} before, {load[1]:.2f} after")
    print(f"A  segkd: {shlex.join(segkd_eval)}")
    print(f"B  plain: {shlex.join(plain_loop)}")
    print(f"numbers: the 10 metrics of A and B differ by at most {largest_difference:.1e}\n")
    print(f"{'pair':<7}{'A wall s':>9}{'B wall s':>9}{'B / A':>7}{'A cpu s':>10}{'B cpu s':>9}")
    for index, ((segkd, plain), ratio) in enumerate(zip(pairs, ratios), 1):
        print(f"{index:<7}{segkd.wall_s:>9.2f}{plain.wall_s:>9.2f}{ratio:>7.2f}{segkd.cpu_s:>10.2f}{plain.cpu_s:>9.2f}")
    median = statistics.median
    print(f"{'median':<7}{median(a.wall_s for a, _ in pairs):>9.2f}{median(b.wall_s for _, b in pairs):>9.2f}"
          f"{median(ratios):>7.2f}{median(a.cpu_s for a, _ in pairs):>10.2f}{median(b.cpu_s for _, b in pairs):>9.2f}")
    print(f"\nsegkd eval is {median(ratios):.2f}x the plain loop's speed (median of the pairwise wall-clock ratios;"
          " cpu s: user + system time of all their processes)")


if __name__ == "__main__":
    main()
