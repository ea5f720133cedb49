#!/usr/bin/env python
"""What handing an image's pictures to the backends costs: the visualizer and the W&B worker.

    .venv/bin/python benchmarks/bench_logging.py [--size 1024x2048] [--images 10] [--repeats 3]

Two measurements, each against its baseline in the same run, alternating:
  hand-off   FeatureVisualizer.add_panels with the local and W&B (offline) backends, for
             eight pictures per image (the input with its masks, seven overlays of the
             sample photo) at --size: wall time per image, and CPU time of the calling
             thread (the drawer's logging thread, which keeps W&B's rows in order: its
             time per image is what caps images/s however many cores there are).
             Baseline: the local backend written in order on that thread after the
             encodings (`any_order = False`, as before); featvis: its files written by the
             encoding threads as each picture is encoded.
  W&B worker the worker's CPU time per logged row of nine JPEGs at W&B's size (at most 1024
             on the longer side, quality 90), in this process on an offline run. Baseline:
             wandb's own `wandb.Image(path)` (decodes each picture to read its size, copies
             the file into the run); featvis: `size_from_header` (reads the header, moves the file).
Medians over --repeats; wall times on a shared machine are noisy, CPU times less so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_SILENT", "true")

from featvis.backends.base import RunInfo  # noqa: E402
from featvis.backends.encoding import PictureFormat  # noqa: E402
from featvis.backends.local import FeatvisLocalVisBackend  # noqa: E402
from featvis.backends.visualizer import FeatureVisualizer  # noqa: E402
from featvis.data.paths import ASSETS  # noqa: E402
from featvis.render.panel import LabelMaps, Panel  # noqa: E402
from tests.helpers import compose_cfg  # noqa: E402


def photo(h: int, w: int) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(ASSETS / "sample" / "grace_hopper.jpg")), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))


def panels(image: np.ndarray, i: int) -> list:
    """Image i's eight panels: the input (with prediction masks) and seven JET overlays."""
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[:, image.shape[1] // 2:] = 1
    out = [Panel("input", np.roll(image, i, 1), f"img{i}",
                 labels=LabelMaps(prediction=labels, ground_truth=None, class_names=("a", "b")))]
    for j in range(7):
        heat = cv2.applyColorMap(np.roll(image[:, :, 0], 37 * j + i, 0), cv2.COLORMAP_JET)
        out.append(Panel(f"featmap/l{j}", cv2.addWeighted(image, 0.5, heat, 0.5, 0), f"l{j}", layer=f"l{j}"))
    return out


def hand_off(image: np.ndarray, n: int, any_order: bool) -> tuple:
    """(wall s, calling thread's CPU s) per image of add_panels, medians over n images."""
    FeatvisLocalVisBackend.any_order = any_order
    backends = {k: dict(v) for k, v in compose_cfg("backends=[local,wandb]", "wandb.mode=offline").backends.items()}
    walls, cpus = [], []
    with tempfile.TemporaryDirectory(prefix="featvis-bench-logging-") as out:
        with FeatureVisualizer(backends, Path(out), RunInfo("bench", "bench", None)) as vis:
            vis.start()
            for i in range(n):
                ps = panels(image, i)
                t, c = time.perf_counter(), time.thread_time()
                vis.add_panels(ps, step=i, image_id=f"img{i}")
                walls.append(time.perf_counter() - t)
                cpus.append(time.thread_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def worker_rows(image: np.ndarray, n: int, header_only: bool, original) -> float:
    """The W&B worker's CPU s per logged row of nine JPEGs (this process's threads: wandb's included)."""
    import wandb

    from featvis.backends import wandb_child

    wandb.Image._initialize_from_path = original
    if header_only:
        wandb_child.size_from_header(wandb)
    fmt = PictureFormat("jpeg", 90, 1024)
    folder = tempfile.mkdtemp(prefix="featvis-bench-worker-")
    try:
        worker = wandb_child._Worker(lambda message: None)
        worker.run = wandb.init(dir=folder, mode="offline", project="featvis-bench")
        rows = []
        for i in range(n):
            row = {}
            for j in range(9):
                path = Path(folder) / f"{i}_{j}.jpg"
                path.write_bytes(fmt.encode(np.roll(image, 7 * i + 13 * j, 1)))
                row[f"featmap/l{j}"] = {"picture": str(path), "caption": f"{i} {j}"}
            rows.append(row)
        t = time.process_time()
        for i, row in enumerate(rows):
            worker.handle({"op": "log", "step": i, "row": row})
        per_row = (time.process_time() - t) / n
        worker.finish(0)
        return per_row
    finally:
        wandb.Image._initialize_from_path = original
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", default="1024x2048", help="HxW of the pictures")
    parser.add_argument("--images", type=int, default=10, help="images per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    image = photo(h, w)

    import wandb

    from featvis.backends.wandb_run import quiet_setup

    quiet_setup(wandb)
    original = wandb.Image._initialize_from_path
    default_order = FeatvisLocalVisBackend.any_order
    hand_off(image, 2, True)  # warm-up: pools, the W&B worker, page cache
    results = {"before": [], "featvis": []}
    rows = {"before": [], "featvis": []}
    try:
        for _ in range(args.repeats):
            for key, flag in (("before", False), ("featvis", True)):
                results[key].append(hand_off(image, args.images, any_order=flag))
                rows[key].append(worker_rows(image, args.images, header_only=flag, original=original))
    finally:
        FeatvisLocalVisBackend.any_order = default_order

    def med(key, i):
        return statistics.median(r[i] for r in results[key])

    print(f"{args.images} images of 8 pictures at {h}x{w}, local PNG + W&B JPEG; medians of {args.repeats}")
    print(f"{'':44s} {'before':>9s} {'featvis':>9s} {'ratio':>6s}")
    for i, what in enumerate(("add_panels wall per image, ms", "logging thread CPU per image, ms")):
        b, f = med("before", i), med("featvis", i)
        print(f"{what:44s} {b * 1e3:9.1f} {f * 1e3:9.1f} {f / b:6.2f}")
    b, f = statistics.median(rows["before"]), statistics.median(rows["featvis"])
    print(f"{'W&B worker CPU per row of 9 JPEGs, ms':44s} {b * 1e3:9.1f} {f * 1e3:9.1f} {f / b:6.2f}")


if __name__ == "__main__":
    main()
