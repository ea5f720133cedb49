"""Reduced maps -> RGB pictures of the original image's size, blended over the image.

Everything here is RGB uint8 (H, W, 3), the order MMEngine's backends expect: the
MMSegmentation guide's script passed BGR and logged blue-tinted pictures.

By default (`scale=None`) exactly MMEngine's `draw_featmap`: min-max normalised per map,
JET colours, blended over the image with weight `alpha`. A `Scale` (featvis.render.scales)
replaces the per-map min-max by a range chosen once. Two things never change with the scale:

- a constant map is not coloured: the picture is the plain image (the caption says so);
- NaN and +-Inf are drawn as the map's finite minimum (the caption says so too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from featvis.render.align import align
from featvis.render.colormaps import JET, lut
from featvis.render.draw import draw_label, draw_scale_bar_below, grid, pad_below, scale_bar_rows
from featvis.render.scales import Scale, finite_range, is_constant, range_is_constant, scale_for


def normalize(values: np.ndarray, scale: Optional[Scale] = None) -> np.ndarray:
    """Values -> uint8 colour indices, 0 at `scale.lo`, 255 at `scale.hi`, clipped outside.

    scale=None: min-max per map (MMEngine's behaviour), and a constant map becomes 0.
    NaN and Inf are drawn as the map's finite minimum; the pipeline reports them in the caption.
    A degenerate scale (hi <= lo) gives 0 everywhere.
    """
    found, all_finite = finite_range(values)
    if scale is None:
        if range_is_constant(found):
            return np.zeros(values.shape, np.uint8)
        lo, hi = found
        fill = lo
    else:
        lo, hi = scale.lo, scale.hi
        fill = (found or (lo, hi))[0]
    factor = 255.0 / (hi - lo) if hi > lo else 0.0
    if all_finite and values.dtype.kind == "f":
        shifted = values - lo  # no NaN or Inf: nothing to fill
    else:
        shifted = np.nan_to_num(values, nan=fill, posinf=fill, neginf=fill) - lo
    np.multiply(shifted, factor, out=shifted)  # in place: the same arithmetic, fewer 8 MB temporaries
    np.clip(shifted, 0, 255, out=shifted)
    return shifted.astype(np.uint8)


def colorize(values: np.ndarray, scale: Scale) -> np.ndarray:
    """A (H, W) map -> (H, W, 3) RGB uint8 in the scale's colours (no blending)."""
    return apply_lut(normalize(values, scale), scale.colormap)


def apply_lut(indices: np.ndarray, colormap: str) -> np.ndarray:
    """(H, W) uint8 colour indices -> (H, W, 3) RGB: `lut(colormap)[indices]`, by OpenCV's LUT (4x faster)."""
    table = lut(colormap).reshape(256, 1, 3)
    return cv2.LUT(cv2.merge([indices, indices, indices]), table)


def heatmap(values: np.ndarray, image: Optional[np.ndarray], alpha: float,
            scale: Optional[Scale] = None) -> np.ndarray:
    """Colour a (H, W) map and blend it over an RGB image of the same size.

    scale=None: today's per-map min-max JET. A constant map is not coloured: the picture
    is the plain image (mid grey without one).
    """
    if is_constant(values):
        return image.copy() if image is not None else np.full(values.shape + (3,), 128, np.uint8)
    heat = colorize(values, scale if scale is not None else scale_for(values, "per_map", colormap=JET))
    if image is None:
        return heat
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


ScaleArg = Union[None, Scale, Callable[[np.ndarray], Scale]]


@dataclass(frozen=True, eq=False)
class Overlay:
    """What `overlay_maps` drew: the picture, and the scale each map was coloured with."""

    picture: np.ndarray  # RGB uint8: one overlay (H, W, 3), taller with a scale bar below, or a grid of them
    scales: List[Optional[Scale]]  # scales[i] for map i; None for a constant map (not coloured)


def overlay_maps(maps: torch.Tensor, image: np.ndarray, meta: Mapping, alpha: float,
                 arrangement: Optional[Sequence[int]] = None,
                 labels: Optional[Sequence[str]] = None,
                 scale: ScaleArg = None, scale_bar: bool = False) -> Overlay:
    """(K, h, w) maps -> one picture: the overlay for K == 1, a rows x cols grid otherwise.

    Each map is aligned to the image (padding cropped, resized), then coloured with:
    scale=None: per-map min-max JET, exactly MMEngine's draw_featmap (and featvis before
        normalize.*); a Scale: that one for every map (fixed, shared); a callable
        values -> Scale, such as ScaleRule: called on each aligned map (per_map, percentile).
    scale_bar: add each coloured tile's colour scale and range below it (`draw_scale_bar`:
        the tile grows by `scale_bar_rows` rows, every pixel of the map stays visible);
        a constant tile gets none, only white rows of the same height where another
        tile of the grid has a bar, so that the tiles stay aligned.
    The returned `Overlay` holds the picture and the scales used, for captions (`describe`).
    """
    out_hw = image.shape[:2]
    tiles, scales = [], []
    for m in maps:
        values = align(m, meta, out_hw)
        if is_constant(values):
            tile, used = image.copy(), None
        else:
            if scale is None:
                used = scale_for(values, "per_map", colormap=JET)
            elif isinstance(scale, Scale):
                used = scale
            else:
                used = scale(values)
            heat = colorize(values, used)
            if scale_bar:  # blended straight into the taller tile: the picture is not copied again
                tile = np.full((out_hw[0] + scale_bar_rows(*out_hw), out_hw[1], 3), 255, np.uint8)
                cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0, dst=tile[:out_hw[0]])
                draw_scale_bar_below(tile, out_hw[0], used)
            else:
                tile = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
        tiles.append(tile)
        scales.append(used)
    rows_below = max(t.shape[0] for t in tiles) - out_hw[0]
    tiles = [pad_below(t, rows_below) if t.shape[0] < out_hw[0] + rows_below else t for t in tiles]
    if len(tiles) == 1:
        picture = tiles[0]
    else:
        if labels:
            for tile, text in zip(tiles, labels):
                draw_label(tile, text)
        rows, cols = arrangement or (1, len(tiles))
        picture = grid(tiles, rows, cols)
    return Overlay(picture, scales)


def overlay_rgb(maps3: torch.Tensor, image: np.ndarray, meta: Mapping, alpha: float) -> np.ndarray:
    """(3, h, w) maps in [0, 1] (PCA colours) -> RGB blended over the image.

    Channel 0 is red, 1 green, 2 blue. Each channel is aligned like a heat map (padding
    cropped, resized bilinearly to the image); values outside [0, 1] are clipped, NaN is 0.
    """
    if maps3.shape[0] != 3:
        raise ValueError(f"overlay_rgb needs 3 maps (R, G, B), got {tuple(maps3.shape)}")
    out_hw = image.shape[:2]
    rgb = np.stack([align(m, meta, out_hw) for m in maps3], axis=-1)
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0)
    colours = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)

