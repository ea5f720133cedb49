"""Deterministic training of the embedded demo PSPNet on procedural scenes.

Usage::

    python -m featvis.demo.train [--iters N] [--out PATH] [--seed S] [--config PATH]

``--config featvis/assets/configs/demo_pspnet_narrow.py --out
featvis/assets/checkpoints/demo_pspnet_narrow.pth`` trains the other shipped demo model (the
same at half the width: the cross-model comparison's worked example in the README).

The model is built from ``featvis/assets/configs/demo_pspnet.py`` and trained
with a plain PyTorch loop on scenes generated on the fly; the result is saved
as an ordinary MMEngine checkpoint whose ``meta['dataset_meta']`` holds the
class names and palette.  The script exits with status 1 if the mIoU on fresh
scenes is below :data:`MIN_MIOU`.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.apis import inference_model, init_model
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from featvis.data.paths import ASSETS
from featvis.demo.scenes import CLASSES, PALETTE, generate_scene, scene_rng

CONFIG_PATH = ASSETS / 'configs' / 'demo_pspnet.py'
DEFAULT_OUT = ASSETS / 'checkpoints' / 'demo_pspnet.pth'

DEFAULT_ITERS = 1100
DEFAULT_SEED = 0
EVAL_SEED = 1000           # scenes for the reported mIoU (never trained on)
EVAL_SIZE = (192, 256)     # non-square evaluation size (height, width)
EVAL_IMAGES = 32
MIN_MIOU = 0.8

TRAIN_SIZE = 128
BATCH_SIZE = 8
LR = 4e-3
WEIGHT_DECAY = 1e-4
WARMUP_ITERS = 30
NUM_THREADS = 1          # robust (and fast) on a shared 2-core CPU


def build_model(config_path: str | Path = CONFIG_PATH) -> torch.nn.Module:
    """Build the (untrained) segmentor exactly as described by the config."""

    register_all_modules()
    return MODELS.build(Config.fromfile(str(config_path)).model)


def make_batch(rng: np.random.Generator, batch_size: int, size: int) -> dict:
    """Raw (un-preprocessed) batch of square scenes, images in BGR order."""

    inputs, samples = [], []
    for _ in range(batch_size):
        img, label = generate_scene(rng, size, size)
        bgr_chw = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
        inputs.append(torch.from_numpy(bgr_chw))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None].astype(np.int64)))
        samples.append(sample)
    return {'inputs': inputs, 'data_samples': samples}


def lr_factor(it: int, iters: int) -> float:
    """Linear warm-up followed by cosine decay to zero."""
    if it < WARMUP_ITERS:
        return (it + 1) / WARMUP_ITERS
    progress = (it - WARMUP_ITERS) / max(1, iters - WARMUP_ITERS)
    return 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and force deterministic, fixed-thread execution (restored after)."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(NUM_THREADS)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _step(model: torch.nn.Module, optim: torch.optim.Optimizer,
          rng: np.random.Generator) -> dict:
    """One optimisation step on a fresh batch; returns the logged losses."""
    data = model.data_preprocessor(make_batch(rng, BATCH_SIZE, TRAIN_SIZE), training=True)
    loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    optim.zero_grad()
    loss.backward()
    optim.step()
    return log_vars


def train(iters: int = DEFAULT_ITERS, seed: int = DEFAULT_SEED,
          log_every: int = 50, config_path: str | Path = CONFIG_PATH) -> torch.nn.Module:
    """Train a demo model (``config_path``) for ``iters`` iterations; bit-reproducible."""
    with _deterministic(seed):
        model = build_model(config_path).train()
        rng = np.random.default_rng(seed)
        optim = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda it: lr_factor(it, iters))
        start = time.time()
        for it in range(1, iters + 1):
            log_vars = _step(model, optim, rng)
            sched.step()
            if log_every and (it % log_every == 0 or it == iters):
                accs = {k: round(float(v), 1) for k, v in log_vars.items() if 'acc' in k}
                print(f'iter {it}/{iters}  loss {log_vars["loss"]:.4f}  {accs}  '
                      f'lr {sched.get_last_lr()[0]:.2e}  {time.time() - start:.0f}s', flush=True)
        return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | Path, meta: dict) -> None:
    """Save an MMEngine-style checkpoint (tensors + plain-python meta only)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = {'dataset_meta': {'classes': list(CLASSES),
                             'palette': [list(map(int, c)) for c in PALETTE]}, **meta}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, str(path))


def iou_counts(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union pixel counts."""
    n = len(CLASSES)
    inter = np.bincount(label[pred == label], minlength=n)[:n]
    area_p = np.bincount(pred.ravel(), minlength=n)[:n]
    area_l = np.bincount(label.ravel(), minlength=n)[:n]
    return inter, area_p + area_l - inter


def mean_iou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean IoU over the classes that occur in prediction or label."""
    present = union > 0
    return float((inter[present] / union[present]).mean())


def predict(model: torch.nn.Module, img_rgb: np.ndarray) -> np.ndarray:
    """Label map (HxW, int64) predicted via ``mmseg.apis.inference_model``."""

    result = inference_model(model, np.ascontiguousarray(img_rgb[..., ::-1]))
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)


def evaluate_miou(config_path: str | Path, checkpoint_path: str | Path,
                  n_images: int = EVAL_IMAGES, seed: int = EVAL_SEED) -> float:
    """Dataset-level mIoU of a checkpoint on ``n_images`` fresh scenes."""

    model = init_model(str(config_path), str(checkpoint_path), device='cpu')
    inter = union = 0
    for i in range(n_images):
        img, label = generate_scene(scene_rng(seed, i), *EVAL_SIZE)
        i_, u_ = iou_counts(predict(model, img), label.astype(np.int64))
        inter, union = inter + i_, union + u_
    return mean_iou(inter, union)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=DEFAULT_ITERS)
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT)
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    parser.add_argument('--config', type=Path, default=CONFIG_PATH, help='the model config (default: the demo)')
    args = parser.parse_args(argv)

    start = time.time()
    model = train(args.iters, args.seed, config_path=args.config)
    print(f'training took {time.time() - start:.0f}s')
    meta = {'iters': args.iters, 'seed': args.seed, 'config': args.config.name}
    save_checkpoint(model, args.out, meta)
    miou = evaluate_miou(args.config, args.out)
    save_checkpoint(model, args.out, {**meta, 'mIoU': round(miou, 4)})
    size_mb = args.out.stat().st_size / 2**20
    print(f'mIoU {miou:.4f} on {EVAL_IMAGES} fresh {EVAL_SIZE[0]}x{EVAL_SIZE[1]} scenes; '
          f'saved {args.out} ({size_mb:.2f} MiB)')
    if miou < MIN_MIOU:
        print(f'FAILED: mIoU {miou:.4f} < {MIN_MIOU}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
