"""The compare sketch's pixels: seeded points, the same in every job, and a map's features under them.

Taken in the recorder's hook, from the full (C, H, W) map before any reduction (featvis.compare.sketch
keeps and compares them).
"""

from __future__ import annotations

import numpy as np
import torch


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
