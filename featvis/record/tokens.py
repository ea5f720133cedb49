"""Transformer token outputs (B, N, C) -> feature maps (B, C, H, W).

The (H, W) grid of N tokens is taken, in this order, from:
1. an `hw_shape` the module was called with or returned beside the tokens (mmseg passes
   `hw_shape` along through its transformer blocks, and PatchEmbed returns it);
2. the aspect ratio of the image the backbone is looking at (its input, or the current
   slide window): the factorisation N = H x W closest to that ratio, within 10 %.
Otherwise the grid cannot be inferred and the layer is reported, not guessed.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Optional, Tuple

import torch

Grid = Tuple[int, int]
ASPECT_TOLERANCE = 0.10


def _pairs(values: Iterable[Any]) -> Iterator[Grid]:
    """(H, W) candidates among call arguments and output elements, one level deep."""
    for value in values:
        if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            yield int(value[0]), int(value[1])


def token_grid(n: int, hints: Iterable[Any], aspect: Optional[float]) -> Optional[Grid]:
    """The (H, W) of n tokens, or None when neither a hint nor the aspect ratio settles it."""
    for h, w in _pairs(hints):
        if h * w == n:
            return h, w
    if aspect is None or aspect <= 0:
        return None
    best: Optional[Grid] = None
    for h in range(1, math.isqrt(n) + 1):
        if n % h == 0:
            for grid in ((h, n // h), (n // h, h)):
                if best is None or abs(math.log(grid[0] / grid[1] / aspect)) < abs(
                        math.log(best[0] / best[1] / aspect)):
                    best = grid
    if best is None or abs(best[0] / best[1] / aspect - 1) > ASPECT_TOLERANCE:
        return None
    return best


def tokens_to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W)."""
    b, n, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])
