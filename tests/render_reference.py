"""featvis's overlay drawn the plain way (numpy, OpenCV), as the pixel-exact tests and bench_encoding.py
compare featvis's faster drawing with it. Not a test module."""

import numpy as np

from featvis.render.align import align
from featvis.render.colormaps import JET, lut
from featvis.render.draw import draw_scale_bar
from featvis.render.scales import CONSTANT_RTOL, Scale, make_scale


def _ref_min_max(values):
    finite = values[np.isfinite(values)]
    return None if finite.size == 0 else (float(finite.min()), float(finite.max()))


def _ref_is_constant(values):
    found = _ref_min_max(values)
    return found is None or found[1] - found[0] <= CONSTANT_RTOL * max(abs(found[0]), abs(found[1]))


def _ref_normalize(values, scale):
    lo, hi = scale.lo, scale.hi
    fill = (_ref_min_max(values) or (lo, hi))[0]
    cleaned = np.nan_to_num(values, nan=fill, posinf=fill, neginf=fill)
    factor = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((cleaned - lo) * factor).clip(0, 255).astype(np.uint8)


def _ref_overlay(m, image, meta, alpha, scale, bar):
    import cv2

    values = align(m, meta, image.shape[:2])
    if _ref_is_constant(values):
        return image.copy()
    if scale is None:
        used = make_scale(*_ref_min_max(values), JET)
    elif isinstance(scale, Scale):
        used = scale
    else:
        used = scale(values)
    tile = cv2.addWeighted(image, 1.0 - alpha, lut(used.colormap)[_ref_normalize(values, used)], alpha, 0.0)
    return draw_scale_bar(tile, used) if bar else tile
