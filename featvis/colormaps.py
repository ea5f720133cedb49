"""Colour look-up tables: 256 x 3 uint8, RGB order, index 0 = bottom of the scale.

No matplotlib: JET is OpenCV's (the one MMEngine's `draw_featmap` uses), and the
diverging map is built by interpolating ColorBrewer's RdBu anchors, reversed so that
low values are blue and high values red. Its two middle entries (127 and 128) are both
exactly `NEUTRAL`, so a value at the centre of a symmetric range [-m, m], which lands on
index 127 (127.5 truncated), is drawn neutral whatever the rounding.
"""

from __future__ import annotations

from typing import Dict

import cv2
import numpy as np

JET = "jet"
DIVERGING = "diverging"


def _jet_lut() -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return np.ascontiguousarray(cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, 0, ::-1])  # BGR -> RGB


# ColorBrewer RdBu (11 classes), blue end first; the sixth anchor is the neutral centre.
_RDBU_ANCHORS = np.array([
    (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31),
], np.float64)
NEUTRAL = tuple(int(c) for c in _RDBU_ANCHORS[5])


def _diverging_lut() -> np.ndarray:
    """Blue -> neutral over entries 0..127, neutral -> red over 128..255 (symmetric halves)."""
    lut = np.empty((256, 3), np.float64)
    lower, upper = _RDBU_ANCHORS[:6], _RDBU_ANCHORS[5:]
    for c in range(3):
        lut[:128, c] = np.interp(np.arange(128), np.linspace(0, 127, 6), lower[:, c])
        lut[128:, c] = np.interp(np.arange(128, 256), np.linspace(128, 255, 6), upper[:, c])
    return np.rint(lut).astype(np.uint8)


LUTS: Dict[str, np.ndarray] = {JET: _jet_lut(), DIVERGING: _diverging_lut()}
for _lut in LUTS.values():
    _lut.setflags(write=False)


def lut(name: str) -> np.ndarray:
    """The (256, 3) RGB uint8 table of a colormap name (`jet` or `diverging`)."""
    try:
        return LUTS[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}: use one of {sorted(LUTS)}") from None
