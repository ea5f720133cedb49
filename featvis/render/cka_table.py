"""A table of CKA values as a picture: rows x columns of cells coloured by value (viridis), each with its number.

The colour scale runs from 0 to 1, or, when every value is at least 0.5, from just under
the lowest value (a multiple of 0.05) to 1, so that checkpoints that all stay close to
the baseline still differ in colour; the colour bar says which. Drawn with matplotlib's
object API on the Agg canvas (no pyplot: no global figure state, no display needed);
returns RGB uint8 like everything in featvis.render. (featvis.render.similarity draws a
square layer x layer matrix; this one is layers x checkpoints, with three decimals.)
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORMAP = "viridis"


def cka_heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str = "",
                label: str = "linear CKA") -> np.ndarray:
    """An RGB picture of `values` (len(rows) x len(cols), NaN = no value, drawn grey)."""
    values = np.asarray(values, np.float64).reshape(len(rows), len(cols))
    low = color_floor(values)
    width = 2.6 + 1.1 * max(1, len(cols)) + 0.05 * max((len(r) for r in rows), default=0)
    height = 1.3 + 0.32 * max(1, len(rows))
    fig = Figure(figsize=(min(width, 24.0), min(height, 40.0)), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = np.ma.masked_invalid(values)
    cmap = matplotlib.colormaps[COLORMAP].with_extremes(bad="#bbbbbb")
    image = ax.imshow(shown, cmap=cmap, vmin=low, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label=label)
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            dark = v < low + 0.6 * (1 - low)  # readable on viridis
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def color_floor(values: np.ndarray) -> float:
    """The bottom of the colour scale: 0, or a multiple of 0.05 under the lowest value when all are >= 0.5."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() < 0.5:
        return 0.0
    return max(0.0, math.floor(min(float(finite.min()), 0.999) * 20) / 20 - 0.05)
