"""A similarity matrix (values 0..1, rows and columns named) as a heat map picture.

Drawn with matplotlib's object API (no pyplot: no global state, no display), viridis from
0 to 1 with a colour bar; cells that cannot be told (NaN) are grey; the values are written
in the cells when there are at most `MAX_NUMBERED` rows. Returns (H, W, 3) RGB uint8, as
every featvis picture is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_NUMBERED = 16  # at most this many rows: each cell shows its value
COLORMAP = "viridis"


def similarity_picture(matrix: np.ndarray, labels: Sequence[str], title: Optional[str] = None,
                       dpi: int = 100) -> np.ndarray:
    """The heat map of a square `matrix` whose rows and columns are `labels`."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(f"a {matrix.shape} matrix for {n} labels")
    longest = max((len(label) for label in labels), default=1)
    side = max(4.0, 0.5 * n + 0.09 * longest + 2.0)  # inches: room for the cells and the names
    fig = Figure(figsize=(side + 1.0, side), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[COLORMAP].with_extremes(bad="#bbbbbb")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n), labels=labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n), labels=labels, fontsize=8)
    if n <= MAX_NUMBERED:
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                text = "-" if np.isnan(value) else f"{value:.2f}"
                color = "black" if not np.isnan(value) and value > 0.6 else "white"  # readable on viridis
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
