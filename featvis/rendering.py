"""Reduced maps and label masks -> RGB pictures of the original image's size.

Everything here is RGB uint8 (H, W, 3), the order MMEngine's backends expect: the
MMSegmentation guide's script passed BGR and logged blue-tinted pictures.
Heat maps follow MMEngine's `draw_featmap`: min-max normalised per map, JET colours,
blended over the image with weight `alpha`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

IGNORE_INDEX = 255


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


def align(map2d: torch.Tensor, meta: Mapping, out_hw: Tuple[int, int]) -> np.ndarray:
    """Crop the padding off a (H, W) map and resize it bilinearly to `out_hw`."""
    h, w = valid_region(meta, tuple(map2d.shape))
    cropped = map2d[:h, :w].numpy().astype(np.float32)
    return cv2.resize(cropped, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


CONSTANT_RTOL = 1e-5  # a map whose range is below this fraction of its magnitude is constant


def is_constant(values: np.ndarray) -> bool:
    """True for a map with nothing to show: all equal up to float rounding, or no finite value.

    Min-max normalisation would stretch rounding noise (1e-7 of a global-pooling branch's
    value) to the full colour range and draw it as if it were data.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return True
    lo, hi = float(finite.min()), float(finite.max())
    return hi - lo <= CONSTANT_RTOL * max(abs(lo), abs(hi))


def normalize(values: np.ndarray) -> np.ndarray:
    """Min-max to uint8, per map (MMEngine's behaviour); a constant map becomes 0.

    NaN and Inf are drawn as the minimum; the pipeline reports them in the caption.
    """
    if is_constant(values):
        return np.zeros(values.shape, np.uint8)
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    cleaned = np.nan_to_num(values, nan=lo, posinf=lo, neginf=lo)
    return ((cleaned - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def heatmap(values: np.ndarray, image: Optional[np.ndarray], alpha: float) -> np.ndarray:
    """Colour a (H, W) map with JET and blend it over an RGB image of the same size.

    A constant map is not coloured: the picture is the plain image (mid grey without one).
    """
    if is_constant(values):
        return image.copy() if image is not None else np.full(values.shape + (3,), 128, np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(normalize(values), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    if image is None:
        return heat
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def overlay_maps(maps: torch.Tensor, image: np.ndarray, meta: Mapping, alpha: float,
                 arrangement: Optional[Sequence[int]] = None,
                 labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """(K, h, w) maps -> one picture: the overlay for K == 1, a rows x cols grid otherwise."""
    out_hw = image.shape[:2]
    tiles = [heatmap(align(m, meta, out_hw), image, alpha) for m in maps]
    if len(tiles) == 1:
        return tiles[0]
    if labels:
        for tile, text in zip(tiles, labels):
            _label(tile, text)
    rows, cols = arrangement or (1, len(tiles))
    return grid(tiles, rows, cols)


def grid(tiles: Sequence[np.ndarray], rows: int, cols: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized RGB pictures row by row, white between them, without matplotlib."""
    h, w = tiles[0].shape[:2]
    canvas = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return canvas


def _label(tile: np.ndarray, text: str) -> None:
    scale = max(0.35, tile.shape[0] / 500)
    thickness = max(1, int(scale * 2))
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Label map (H, W) -> RGB with the dataset palette; ignored or unknown labels are black."""
    lut = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8)[:IGNORE_INDEX]
    lut[: len(colours)] = colours
    return lut[labels.astype(np.uint8)]


def overlay_labels(labels: np.ndarray, image: np.ndarray, palette: Sequence[Sequence[int]],
                   alpha: float) -> np.ndarray:
    """Blend the palette colours of a label map over the image; ignored pixels stay as they are."""
    coloured = cv2.addWeighted(image, 1.0 - alpha, colorize(labels, palette), alpha, 0.0)
    ignored = labels == IGNORE_INDEX
    coloured[ignored] = image[ignored]
    return coloured
