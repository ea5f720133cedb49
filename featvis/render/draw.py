"""Drawing helpers on RGB uint8 pictures: the colour-scale bar, grids of tiles, labels.

`draw_scale_bar` adds the colour scale and its end values BELOW a picture (the picture
grows by `scale_bar_rows` rows), so that every pixel of the map stays visible.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from featvis.render.colormaps import DIVERGING, lut
from featvis.render.scales import Scale, format_number

SCALE_BAR_FONT = cv2.FONT_HERSHEY_SIMPLEX

SCALE_BAR_MIN_TEXT_HW = (48, 64)  # pictures smaller than this get the strip without the numbers

SCALE_BAR_GAP = 2  # white rows between the picture and the strip


def _bar_layout(height: int) -> Tuple[int, float, int, int]:
    """(strip rows, font scale, text thickness, rows of the text band under the strip)."""
    bar = int(min(12, max(8, height // 32)))
    bar = min(bar, max(1, height // 4))
    font = float(min(1.0, max(0.4, height / 400)))
    thickness = 1 if font < 0.7 else 2
    (_, text_h), baseline = cv2.getTextSize("-0.123", SCALE_BAR_FONT, font, thickness)
    return bar, font, thickness, text_h + baseline + 4


def _has_text(height: int, width: int) -> bool:
    return height >= SCALE_BAR_MIN_TEXT_HW[0] and width >= SCALE_BAR_MIN_TEXT_HW[1]


def scale_bar_rows(height: int, width: int) -> int:
    """How many rows `draw_scale_bar` adds below a picture of this size."""
    bar, _, _, text_rows = _bar_layout(height)
    return SCALE_BAR_GAP + bar + (text_rows if _has_text(height, width) else 0)


def draw_scale_bar(picture: np.ndarray, scale: Scale) -> np.ndarray:
    """The RGB picture with its colour scale added below it: a new, taller picture.

    The picture's own rows are copied unchanged; under them, after SCALE_BAR_GAP white rows,
    a full-width strip of 8-12 rows (fewer on pictures under 32 rows) shows the colormap
    from scale.lo (left) to scale.hi (right), and under the strip, on white, the two values
    (and 0 in the middle of a diverging scale). The picture grows by `scale_bar_rows(h, w)`
    rows; pictures under 48x64 get the strip without the numbers.
    """
    h, w = picture.shape[:2]
    out = pad_below(picture, scale_bar_rows(h, w))
    draw_scale_bar_below(out, h, scale)
    return out


def draw_scale_bar_below(out: np.ndarray, h: int, scale: Scale) -> None:
    """Draw `draw_scale_bar`'s strip and numbers into rows h.. of `out`, a picture of h rows
    followed by `scale_bar_rows(h, w)` white rows (drawn in place: no copy of the picture)."""
    w = out.shape[1]
    bar, font, thickness, _ = _bar_layout(h)
    index = np.rint(np.linspace(0, 255, w)).astype(np.intp) if w > 1 else np.array([255])
    top = h + SCALE_BAR_GAP
    out[top:top + bar, :] = lut(scale.colormap)[index][None, :, :]
    if not _has_text(h, w):
        return
    (_, text_h), _ = cv2.getTextSize("-0.123", SCALE_BAR_FONT, font, thickness)
    y = top + bar + 2 + text_h  # text baseline, just under the strip
    texts = [(format_number(scale.lo), "left"), (format_number(scale.hi), "right")]
    if scale.colormap == DIVERGING:
        texts.append(("0", "centre"))
    taken: List[Tuple[int, int]] = []
    for text, where in texts:
        (tw, _), _ = cv2.getTextSize(text, SCALE_BAR_FONT, font, thickness)
        x = {"left": 2, "right": w - tw - 2, "centre": (w - tw) // 2}[where]
        if any(x < end + 4 and start < x + tw + 4 for start, end in taken):
            continue  # would overlap lo or hi on a narrow picture
        taken.append((x, x + tw))
        cv2.putText(out, text, (x, y), SCALE_BAR_FONT, font, (0, 0, 0), thickness, cv2.LINE_AA)


def pad_below(picture: np.ndarray, rows: int) -> np.ndarray:
    """The picture with `rows` white rows added below it (a new array)."""
    h, w = picture.shape[:2]
    out = np.full((h + rows, w, 3), 255, np.uint8)
    out[:h] = picture
    return out


def grid(tiles: Sequence[np.ndarray], rows: int, cols: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized RGB pictures row by row, white between them, without matplotlib."""
    h, w = tiles[0].shape[:2]
    canvas = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return canvas


def draw_label(tile: np.ndarray, text: str) -> None:
    scale = max(0.35, tile.shape[0] / 500)
    thickness = max(1, int(scale * 2))
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)

