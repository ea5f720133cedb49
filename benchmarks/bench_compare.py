"""What the finer comparisons cost in a sweep's summary: checkpoints compared with unbiased CKA, per class and by
class embeddings, against the plain linear CKA and change alone (the summary's comparison before them), in this process.

    python benchmarks/bench_compare.py [--images 50] [--rounds 3]

Two jobs' sketches like a ResNet-50 sweep's (4 backbone stages of 256, 512, 1024 and 2048 channels; 256 sampled
pixels per image; 5 ground-truth classes under them) are written to a temporary sweep folder; then, per round:
the baseline (plain linear CKA and change of every layer: featvis.compare.pairs.Pair without the unbiased
estimator, what the summary computed before) and the summary's whole comparison now
(featvis.sweep.checkpoints.compare_checkpoints with its caches cleared: unbiased CKA, per-class numbers,
embeddings and separability). Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from featvis.compare.pairs import Pair
from featvis.compare.sketch import Sketch, SketchWriter
from featvis.sweep import checkpoints, embeddings
from featvis.sweep.results import RESULT_FILE, JobRecord

CHANNELS = {"backbone[0]": 256, "backbone[1]": 512, "backbone[2]": 1024, "backbone[3]": 2048}
P = 256


def write_sweep(root: Path, images: int) -> list:
    rng = np.random.default_rng(0)
    classes = [rng.integers(0, 5, P).astype(np.int16) for _ in range(images)]
    jobs = []
    for num, name in enumerate(["a.pth", "b.pth"]):
        job_dir = root / str(num)
        record = JobRecord(dir=job_dir, name=f"model.checkpoint={name}", status="ok", num=num,
                           overrides=[f"model.checkpoint=/c/{name}"], images=[f"im{i}" for i in range(images)],
                           checkpoint=name)
        job_dir.mkdir(parents=True)
        (job_dir / RESULT_FILE).write_text(json.dumps(record.to_json()))
        writer = SketchWriter(pixels=P, seed=0, meta={"classes": [f"c{k}" for k in range(5)]}, stream=job_dir / "s")
        for i in range(images):
            for layer, c in CHANNELS.items():
                writer.add(f"im{i}", layer, rng.normal(size=(P, c)).astype(np.float16), None)
            writer.add_classes(f"im{i}", classes[i])
        writer.write(job_dir / "featvis")
        jobs.append(record)
    return jobs


def plain(jobs: list) -> None:
    a, b = (Sketch(checkpoints.sketch_path(j)) for j in jobs)
    for layer in CHANNELS:
        pair = Pair()
        for stem in a.images:
            pair.add(a.features(stem, layer), b.features(stem, layer))
        pair.value()


def whole(root: Path, jobs: list) -> None:
    checkpoints._PAIRS.clear()
    embeddings._CACHE.clear()
    checkpoints.compare_checkpoints(root, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = write_sweep(Path(tmp), args.images)
        times: dict = {"plain": [], "now": []}
        for _ in range(args.rounds):
            for label, run in (("plain", lambda: plain(jobs)), ("now", lambda: whole(Path(tmp), jobs))):
                start = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - start)
    base, now = statistics.median(times["plain"]), statistics.median(times["now"])
    print(f"{args.images} images x 4 layers (256..2048 channels), 2 checkpoints, medians of {args.rounds}:")
    print(f"  linear CKA and change only (before): {base:.2f} s")
    print(f"  + unbiased CKA, per class, embeddings: {now:.2f} s   ratio {now / base:.2f}x")


if __name__ == "__main__":
    main()
