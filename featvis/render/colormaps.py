"""Colour look-up tables: 256 x 3 uint8, RGB order, index 0 = bottom of the scale.

JET is OpenCV's (the one MMEngine's `draw_featmap` uses; matplotlib's jet differs).
The diverging map is matplotlib's `RdBu_r` (ColorBrewer's RdBu, blue low, red high),
sampled so that its two middle entries (127 and 128) are both exactly its neutral
centre `NEUTRAL`: a value at the centre of a symmetric range [-m, m], which lands on
index 127 (127.5 truncated), is drawn neutral whatever the rounding. (Sampling all 256
entries evenly would put the centre between 127 and 128 and make neither neutral.)
"""

from __future__ import annotations

from typing import Dict, Tuple

import cv2
import matplotlib
import numpy as np

JET = "jet"
DIVERGING = "diverging"
DIVERGING_SOURCE = "RdBu_r"  # the matplotlib colormap behind DIVERGING


def _jet_lut() -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return np.ascontiguousarray(cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, 0, ::-1])  # BGR -> RGB


def _diverging_lut() -> np.ndarray:
    """Blue -> neutral over entries 0..127, neutral -> red over 128..255 (symmetric halves).

    255 evenly spaced samples put the centre on sample 127; it is used twice, as entries
    127 and 128, so each half spans exactly half of the colormap.
    """
    samples = matplotlib.colormaps[DIVERGING_SOURCE].resampled(255)(np.arange(255))[:, :3]
    halves = np.concatenate([samples[:128], samples[127:]])
    return np.rint(halves * 255.0).astype(np.uint8)


LUTS: Dict[str, np.ndarray] = {JET: _jet_lut(), DIVERGING: _diverging_lut()}
for _lut in LUTS.values():
    _lut.setflags(write=False)

NEUTRAL: Tuple[int, int, int] = tuple(int(c) for c in LUTS[DIVERGING][127])  # (247, 247, 247)


def lut(name: str) -> np.ndarray:
    """The (256, 3) RGB uint8 table of a colormap name (`jet` or `diverging`)."""
    try:
        return LUTS[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}: use one of {sorted(LUTS)}") from None
