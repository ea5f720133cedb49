#!/usr/bin/env python
"""Plain mmseg against a featvis job over the same folder, on CUDA, at batch 1 and 8.

    .venv/bin/python benchmarks/bench_gpu.py                       # ANN R50-D8, 16 images 1024x2048, cuda
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --model demo --images 4 --size 192x256 --batches 1,2

For each batch size, in one run of this script and on the same generated images (crops of
featvis's sample photo, `bench_batch.make_images(content="photo")`):
  plain    init_model + revert_sync_batchnorm once, then `inference_model(model, [images])`
           over the folder in chunks of the batch size, images decoded by cv2.imread (timed);
  featvis  featvis.pipeline.job.run over the folder with batch_size=<b>, layers=decoder,
           backends local + W&B offline (pictures drawn and logged as a user's job would).
Model load is excluded from both: images/s is images over the time from the model built
to the last image drawn (featvis) or inferred (plain); CUDA is synchronised before each
clock read. ANN runs with random weights (model.checkpoint=null), which cost the same as
trained ones. One warm-up inference first. Prints images/s and featvis/plain wall ratio.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import make_images, run_featvis  # noqa: E402
from bench_pipeline import MODELS, compose_cfg  # noqa: E402


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_plain(model, images: List[Path], batch: int, device: str) -> float:
    """Seconds for the whole folder, decoding included, model already built."""
    from mmseg.apis import inference_model

    sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(images), batch):
        chunk = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images[start:start + batch]]
        inference_model(model, chunk if batch > 1 else chunk[0])
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", choices=MODELS, default="ann")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", default="1024x2048", help="HxW of the generated images")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here; run it on a GPU machine, or pass --device cpu")
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    from featvis.data.paths import resolve_model_config
    from featvis.model.checkpoints import resolve_checkpoint

    logging.getLogger().setLevel(logging.ERROR)
    batches = [int(b) for b in args.batches.split(",")]
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="featvis-bench-gpu-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images = make_images(folder, args.images, size, "photo")
        cfg = compose_cfg(args.model, folder)
        cfg.device = args.device
        config = str(resolve_model_config(cfg.model.config))
        checkpoint = resolve_checkpoint(cfg.model.checkpoint)
        model = revert_sync_batchnorm(init_model(config, checkpoint, device=args.device))
        inference_model(model, cv2.imread(str(images[0]), cv2.IMREAD_COLOR))  # warm-up (cuDNN, allocator)
        rows = []
        for batch in batches:
            plain_s = run_plain(model, images, batch, args.device)
            cfg.batch_size = batch
            with tempfile.TemporaryDirectory(prefix="featvis-bench-gpu-job-") as out:
                numbers = run_featvis(cfg, Path(out))
            featvis_s = sum(numbers["per_image_s"])  # model built -> last image drawn and logged
            rows.append((batch, len(images) / plain_s, len(images) / featvis_s, featvis_s / plain_s))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"\nmodel {args.model} ({'trained' if checkpoint else 'random'} weights), {len(images)} images "
          f"{size[0]}x{size[1]}, device {args.device} ({name}), torch {torch.__version__}")
    print(f"{'batch':>6}{'plain img/s':>13}{'featvis img/s':>15}{'featvis/plain':>15}")
    for batch, plain, feat, ratio in rows:
        print(f"{batch:>6}{plain:13.2f}{feat:15.2f}{ratio:14.2f}x")


if __name__ == "__main__":
    main()
