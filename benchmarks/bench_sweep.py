#!/usr/bin/env python
"""A sweep over layer presets against a single job: what share_forward saves.

    python benchmarks/bench_sweep.py [--model ann] [--images 1] [--presets decoder,backbone,auxiliary,dense]
                                     [--json out.json]

Three commands a user would type, each timed as a whole (interpreter start, imports,
model build, inference, pictures, local PNGs and an offline W&B run per job), one after
the other in this run of the script:
  (a) single    `python run.py layers=decoder ...`: one job, the first preset;
  (b) shared    `python run.py -m layers=decoder,backbone,auxiliary,dense ...`: the sweep,
                with share_forward (default): the model loads once and runs once per
                image for the union of the presets' layers;
  (c) unshared  the same sweep with share_forward=false: the model still loads once
                (featvis's model cache) but runs once per job and image, as the
                MMSegmentation doc script would for each set of layers;
  (d) largest   `python run.py layers=dense ...`: one job, the last preset (the sweep's
                largest on ANN: every convolution), which alone records and draws most
                of what the sweep does.
Target: (b)/(a) <= 1.3x. `--model ann` (default) runs ANN R50-D8 with random weights
(model.checkpoint=null: nothing can be downloaded here; trained weights cost the same) on
generated 512x1024 PNGs; `--model demo` runs the shipped checkpoint on its demo images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_images(model: str, n: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = (512, 1024) if model != "demo" else (192, 256)
    rng = np.random.default_rng(0)
    for i in range(n):  # the cost does not depend on the content
        cv2.imwrite(str(folder / f"bench_{i:03d}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def timed(args: list, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{Path(sys.argv[0]).stem}: `run.py {' '.join(args)}` failed: {proc.stderr.strip()[-500:]}")
    return elapsed


def forwards(sweep: Path) -> list:
    """(name, forwards, reused) per job, from the sweep's result files."""
    from featvis.sweep.results import load_results

    return [(r.name, r.forwards, r.reused) for r in load_results(sweep)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("--model", default="ann")
    parser.add_argument("--images", type=int, default=1, help="generated images (default 1)")
    parser.add_argument("--presets", default="decoder,backbone,auxiliary,dense", help="the swept layer presets")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="featvis-bench-sweep-"))
    images = make_images(args.model, args.images, tmp / "images")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp / "no-netrc"), WANDB_SILENT="true")  # offline W&B runs, as with no key
    common = [f"model={args.model}", f"image={images}", "gt_mask=null"]
    if args.model != "demo":
        common.append("model.checkpoint=null")
    first = args.presets.split(",")[0]

    single = timed([*common, f"layers={first}", f"hydra.run.dir={tmp / 'single'}"], env)
    print(f"(a) single job, layers={first}: {single:.1f} s", flush=True)
    shared = timed(["-m", *common, f"layers={args.presets}", f"hydra.sweep.dir={tmp / 'shared'}"], env)
    print(f"(b) sweep layers={args.presets}: {shared:.1f} s  {forwards(tmp / 'shared')}", flush=True)
    unshared = timed(["-m", *common, f"layers={args.presets}", "share_forward=false",
                      f"hydra.sweep.dir={tmp / 'unshared'}"], env)
    print(f"(c) the same sweep, share_forward=false: {unshared:.1f} s", flush=True)
    last = args.presets.split(",")[-1]
    largest = timed([*common, f"layers={last}", f"hydra.run.dir={tmp / 'largest'}"], env)
    print(f"(d) single job, layers={last}: {largest:.1f} s", flush=True)

    n = len(args.presets.split(","))
    numbers = {"model": args.model, "images": args.images, "presets": args.presets,
               "single_s": single, "sweep_shared_s": shared, "sweep_unshared_s": unshared,
               "single_largest_s": largest, "shared_vs_single": shared / single,
               "unshared_vs_single": unshared / single, "shared_vs_largest": shared / largest}
    print(f"\n{n}-preset sweep / single job (layers={first}): {numbers['shared_vs_single']:.2f}x with "
          f"share_forward (target <= 1.3x), {numbers['unshared_vs_single']:.2f}x without; "
          f"/ single job (layers={last}): {numbers['shared_vs_largest']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
