"""Feature maps -> the original image's pixel grid: padding cropped, then resized.

The model saw the image resized to `img_shape` and padded at the bottom and right to
`batch_input_shape` (or `pad_shape`); a map spans that padded input. Everything drawn
is aligned here first, so maps line up with the image the user gave.
"""

from __future__ import annotations

from typing import Mapping, Tuple, Union

import cv2
import numpy as np
import torch


def valid_region(meta: Mapping, map_hw: Tuple[int, int]) -> Tuple[int, int]:
    """How many rows and columns of a feature map cover the image, not the padding.

    The model saw the image resized to `img_shape` and padded at the bottom and right
    to `batch_input_shape` (or `pad_shape`); a map of size `map_hw` spans that padded input.
    """
    img_h, img_w = meta.get("img_shape", map_hw)[:2]
    full_h, full_w = (meta.get("batch_input_shape") or meta.get("pad_shape") or (img_h, img_w))[:2]
    h = max(1, min(map_hw[0], round(map_hw[0] * img_h / full_h)))
    w = max(1, min(map_hw[1], round(map_hw[1] * img_w / full_w)))
    return h, w


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
    """Crop the padding off a (H, W) map and resize it bilinearly to `out_hw`."""
    return cv2.resize(crop_valid(map2d, meta), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)

