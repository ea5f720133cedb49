"""The compare sketch's pixels: seeded points, the same in every job, and a map's features under them.

Taken in the recorder's hook, from the full (C, H, W) map before any reduction (featvis.compare.sketch
keeps and compares them).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

NO_CLASS = -1  # a point on the padding, or on a pixel the mask leaves out (its ignore index)


def positions(pixels: int, seed: int) -> np.ndarray:
    """P normalized (y, x) points in [0, 1), the same for a given (pixels, seed) in every job."""
    return np.random.default_rng(seed).random((pixels, 2))


def sample(feat: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """A (C, H, W) map's features under `points` (nearest cell): (P, C) float16 on the CPU."""
    _, h, w = feat.shape
    ys = torch.as_tensor(np.minimum((points[:, 0] * h).astype(np.int64), h - 1), device=feat.device)
    xs = torch.as_tensor(np.minimum((points[:, 1] * w).astype(np.int64), w - 1), device=feat.device)
    rows = feat.detach()[:, ys, xs].T.float()
    return rows.clamp(-65504, 65504).half().cpu().numpy()  # float16's range: an overflow is no inf


def subsample(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` items: all of them in order, or a seeded sorted sample of `limit` when there are more."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def classes_at(gt: np.ndarray, points: np.ndarray, meta: Mapping, ignore_index: int = 255) -> np.ndarray:
    """The ground-truth class under each point (P,) int16, NO_CLASS where there is none.

    The points are normalized over the model's padded input, as for `sample`; the mask is at
    the image's own size. A point past the image (on padding, `img_shape` within
    `batch_input_shape`/`pad_shape`) or on `ignore_index` has no class.
    """
    img_h, img_w = (meta.get("img_shape") or gt.shape)[:2]
    full_h, full_w = (meta.get("batch_input_shape") or meta.get("pad_shape") or (img_h, img_w))[:2]
    y, x = points[:, 0] * full_h / img_h, points[:, 1] * full_w / img_w  # fractions of the image
    h, w = gt.shape[:2]
    rows = np.minimum((y * h).astype(np.int64), h - 1)
    cols = np.minimum((x * w).astype(np.int64), w - 1)
    found = np.asarray(gt)[rows, cols].astype(np.int16)
    found[(y >= 1) | (x >= 1) | (found == ignore_index)] = NO_CLASS
    return found
