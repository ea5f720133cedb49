"""Feature maps -> the original image's pixel grid: padding cropped, then resized.

The model saw the image resized to `img_shape` and padded at the bottom and right to
`batch_input_shape` (or `pad_shape`); a map spans that padded input. Everything drawn
is aligned here first, so maps line up with the image the user gave. When the image covers
a fraction of a map cell (an image of 451 columns padded to 456, a map at 1/8: 56.375 of
its 57 columns), `align` keeps that fraction exactly: the map is drawn as if resized to the
padded input and cut to the image, so no padding shows at the edge and nothing is stretched.
"""

from __future__ import annotations

import math
from typing import Mapping, Tuple, Union

import cv2
import numpy as np
import torch


def valid_region(meta: Mapping, map_hw: Tuple[int, int]) -> Tuple[int, int]:
    """How many rows and columns of a feature map cover the image, not the padding (rounded).

    The model saw the image resized to `img_shape` and padded at the bottom and right
    to `batch_input_shape` (or `pad_shape`); a map of size `map_hw` spans that padded input.
    """
    h, w = valid_extent(meta, map_hw)
    return max(1, min(map_hw[0], round(h))), max(1, min(map_hw[1], round(w)))


def valid_extent(meta: Mapping, map_hw: Tuple[int, int]) -> Tuple[float, float]:
    """How many rows and columns of a feature map cover the image, as fractions of cells (at most the map)."""
    img_h, img_w = meta.get("img_shape", map_hw)[:2]
    full_h, full_w = (meta.get("batch_input_shape") or meta.get("pad_shape") or (img_h, img_w))[:2]
    return min(map_hw[0], map_hw[0] * img_h / full_h), min(map_hw[1], map_hw[1] * img_w / full_w)


def crop_valid(map2d: Union[torch.Tensor, np.ndarray], meta: Mapping) -> np.ndarray:
    """The part of a (H, W) map that covers the image (padding cropped), float32, not resized.

    What to feed `SharedRange.update`: padding values are not data.
    """
    h, w = valid_region(meta, tuple(map2d.shape))
    cropped = map2d[:h, :w]
    if isinstance(cropped, torch.Tensor):
        cropped = cropped.detach().cpu().float().numpy()
    return np.asarray(cropped, np.float32)


def align(map2d: Union[torch.Tensor, np.ndarray], meta: Mapping, out_hw: Tuple[int, int]) -> np.ndarray:
    """Crop the padding off a (H, W) map and resize it bilinearly to `out_hw`.

    Where the image ends inside a cell, the cells it touches are resized so that the image's
    part of them is exactly `out_hw`, and the rest (padding) is cut off.
    """
    h, w = valid_extent(meta, tuple(map2d.shape))
    if _whole(h) and _whole(w):
        return cv2.resize(crop_valid(map2d, meta), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    cells_h, cells_w = max(1, math.ceil(h - 1e-6)), max(1, math.ceil(w - 1e-6))
    cropped = map2d[:cells_h, :cells_w]
    if isinstance(cropped, torch.Tensor):
        cropped = cropped.detach().cpu().float().numpy()
    big_h = max(out_hw[0], round(out_hw[0] * cells_h / h))
    big_w = max(out_hw[1], round(out_hw[1] * cells_w / w))
    big = cv2.resize(np.asarray(cropped, np.float32), (big_w, big_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[:out_hw[0], :out_hw[1]])


def _whole(cells: float) -> bool:
    return abs(cells - round(cells)) < 1e-6

