#!/usr/bin/env python
"""featvis's memory estimate (featvis.engine.budget) against the peak RSS a job really reaches.

    python benchmarks/bench_budget.py [--cases demo,ann] [--limit-gib 16]

Each case is one whole `run.py` job (backends=[local]) in a process of its own, on generated
images (crops of the sample photo, written as PNG); its peak RSS is the kernel's (wait4's
ru_maxrss). What featvis estimates is extra memory: the job's log says "the job needs about N
MiB at most"; it is compared with the peak RSS less the peak of the same job on one 64x64
image (the interpreter, the imports, the model and the probe). Every job runs under
`ulimit -v` (--limit-gib), so that a wrong estimate cannot take the machine down.

Cases (n images of HxW, model.scale as fed):
  demo  the demo PSPNet, 1 image at 1024x2048 and 2048x4096 (fed at most 256 wide: the pictures
        and the full-size result dominate), 1024x2048 fed at full size (model.scale), 3 images at 2048x4096
  ann   ANN R50-D8 with random weights, 1 image at 512x1024 and 768x1536, fed as is (model.scale)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ANN = "mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py"
CASES = {
    "demo": [("demo", [], 1, (1024, 2048)), ("demo", [], 1, (2048, 4096)),
             ("demo", ["model.scale=[2048,1024]"], 1, (1024, 2048)), ("demo", [], 3, (2048, 4096))],
    "ann": [("ann", ["model.checkpoint=null", "model.scale=[1024,512]"], 1, (512, 1024)),
            ("ann", ["model.checkpoint=null", "model.scale=[1536,768]"], 1, (768, 1536))],
}
MODEL = {"demo": ["model=demo"], "ann": [f"model.config={ANN}"]}


def images(folder: Path, count: int, size: Tuple[int, int]) -> Path:
    folder.mkdir(parents=True)
    photo = cv2.imread(str(ROOT / "featvis" / "assets" / "sample" / "grace_hopper.jpg"))
    for i in range(count):
        crop = cv2.resize(np.roll(photo, 37 * i, axis=1), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"img_{i}.png"), crop)
    return folder


def job(args: List[str], out: Path, limit: int) -> Tuple[float, float]:
    """Peak RSS (MiB) of `run.py <args>` and what its log says it needs (MiB)."""
    def bound() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "backends=[local]", "gt_mask=null",
                             f"hydra.run.dir={out}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=bound)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"job failed ({proc.returncode}): {' '.join(args)}: {proc.stderr.read().decode()[-500:]}")
    found = re.search(r"the (?:job|largest images) needs? about (\d+) MiB", (out / "run.log").read_text())
    return usage.ru_maxrss / 1024, float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="demo,ann")
    parser.add_argument("--limit-gib", type=float, default=16.0)
    args = parser.parse_args()
    limit = int(args.limit_gib * (1 << 30))
    print("| model | images | fed | estimate (MiB) | peak RSS - baseline (MiB) | estimate / measured |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        base: dict = {}
        for case in args.cases.split(","):
            for n, (model, extra, count, size) in enumerate(CASES[case]):
                if model not in base:
                    small = images(Path(tmp) / f"{model}_small", 1, (64, 64))
                    base[model], _ = job([*MODEL[model], *extra, f"image={small}"], Path(tmp) / f"{model}_b", limit)
                folder = images(Path(tmp) / f"{case}_{n}", count, size)
                peak, estimate = job([*MODEL[model], *extra, f"image={folder}"], Path(tmp) / f"{case}_{n}_out", limit)
                measured = peak - base[model]
                fed = next((e.split("=")[1] for e in extra if e.startswith("model.scale")), "config's")
                print(f"| {model} | {count} x {size[0]}x{size[1]} | {fed} | {estimate:.0f} | {measured:.0f} "
                      f"| {estimate / measured:.2f} |", flush=True)


if __name__ == "__main__":
    main()
