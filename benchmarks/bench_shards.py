#!/usr/bin/env python
"""One split drawn by one job against the same split in shards side by side on this machine.

    python benchmarks/bench_shards.py [--model ann] [--images 8] [--shards 2] [--rounds 2] [--json out.json]

Whole commands a user would type, timed as a whole (interpreter, imports, model build,
inference, pictures, local PNGs), alternating in this run of the script:
  (a) one job   `python run.py -m model.checkpoint=... image=<folder>`: a one-job sweep, every
                image in one process with torch's own thread count (all cores);
  (b) shards    the same with `shards=N hydra/launcher=joblib hydra.launcher.n_jobs=N`: N
                processes side by side, each drawing 1/N of the images with cores/N threads
                (featvis sets them: featvis.sweep.shards.running_at_once);
  (c) crowded   (b) with `threads=<all cores>` in each shard: what N processes that each take
                every core cost (oversubscribed), to show what the thread split saves.
Prints each wall time, (b)/(a) and (c)/(a), and featvis's own time per image in (a) (its
wall minus the wall of a one-image job, over the other images). `--model ann` (default):
ANN R50-D8 with random weights (model.checkpoint=null; no download here) on generated
512x1024 PNGs; `--model demo`: the shipped checkpoint on 192x256 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sweep import make_images, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("--model", default="ann")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="featvis-bench-shards-"))
    images = make_images(args.model, args.images, tmp / "images")
    one = make_images(args.model, 1, tmp / "one")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    cpus = len(os.sched_getaffinity(0))
    common = ["-m", f"model={args.model}", "gt_mask=null", "backends=[local]", "layers=decoder"]
    if args.model != "demo":
        common.append("model.checkpoint=null")
    parallel = [f"shards={args.shards}", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.shards}"]
    runs = {"one": [], "shards": [], "crowded": [], "single": []}
    for r in range(args.rounds):
        for kind in runs:
            extra = {"one": [], "shards": parallel, "crowded": [*parallel, f"threads={cpus}"], "single": []}[kind]
            folder = one if kind == "single" else images
            runs[kind].append(timed([*common, f"image={folder}", *extra, f"hydra.sweep.dir={tmp / f'{kind}{r}'}"], env))
    med = {k: statistics.median(v) for k, v in runs.items()}
    own = (med["one"] - med["single"]) / max(1, args.images - 1)
    result = {"model": args.model, "images": args.images, "shards": args.shards, "cpus": cpus,
              "seconds": runs, "median": med, "shards_vs_one": med["shards"] / med["one"],
              "crowded_vs_one": med["crowded"] / med["one"], "seconds_per_image_one_job": own}
    print(f"{args.images} images, {args.model}, {cpus} cores, {args.rounds} rounds (medians):")
    print(f"  (a) one job          {med['one']:7.2f} s  ({own:.2f} s per image after the first)")
    print(f"  (b) {args.shards} shards, joblib  {med['shards']:7.2f} s  {result['shards_vs_one']:.2f}x of (a)")
    crowded = f"({args.shards} shards, {cpus} threads each)"
    print(f"  (c) {crowded} {med['crowded']:7.2f} s  {result['crowded_vs_one']:.2f}x of (a)")
    print(f"  one-image job        {med['single']:7.2f} s  (start-up, model build)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
