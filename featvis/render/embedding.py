"""Sampled pixels of a layer in 2-D, coloured by ground-truth class: a panel per job, one legend.

Each panel is one job's pixels on their own first two principal components (featvis.compare.
embedding), each point in its class's colour from the model's palette (dataset_meta), its
title the job, the share of variance the two components hold and the nearest class-centroid
accuracy; the legend names the classes present. Drawn with matplotlib's object API on the
Agg canvas, as featvis.render.cka_table; returns RGB uint8.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from featvis.record.sampling import subsample

Panel = Tuple[str, np.ndarray, np.ndarray]  # (title, (N, 2) coordinates, (N,) classes)
MAX_POINTS = 4000  # points drawn per panel (a seeded subsample above: the picture, not the numbers)


def colour(palette: Sequence[Sequence[int]], c: int) -> Tuple[float, float, float]:
    """Class c's colour (RGB 0..1) from the palette; a fixed colour from tab20 where the palette has none."""
    if 0 <= c < len(palette):
        r, g, b = palette[c][:3]
        return r / 255, g / 255, b / 255
    from matplotlib import colormaps  # noqa: PLC0415

    return tuple(colormaps["tab20"](c % 20)[:3])  # type: ignore[return-value]


def embedding_picture(panels: Sequence[Panel], names: Sequence[str], palette: Sequence[Sequence[int]],
                      title: str = "") -> np.ndarray:
    """A row of scatter panels sharing one legend of the classes present in any of them."""
    n = max(1, len(panels))
    fig = Figure(figsize=(min(3.2 * n + 1.8, 30.0), 3.6), dpi=100)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    present: List[int] = sorted({int(c) for _, _, classes in panels for c in np.unique(classes)})
    for ax, (name, coords, classes) in zip(axes, panels):
        shown = subsample(len(classes), MAX_POINTS)
        pts, cls = coords[shown], classes[shown]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c=[colour(palette, int(c)) for c in cls], linewidths=0)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", markersize=5, color=colour(palette, c),
                      label=names[c] if 0 <= c < len(names) else str(c)) for c in present]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False, title="class", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.2 * n + 1.8), 1))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()



