"""The `Panel` record: one picture of an image, as the render stage hands it to the backends.

Every backend stores `name`, `picture` and `caption`; the optional fields carry what only
some backends use: the input's label maps (W&B draws them as interactive masks) and, on a
feature map, the layer and its activation statistics (W&B's run table, per-layer columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class LabelMaps:
    """An image's segmentation as label maps (H, W) of class indices, with the class names."""

    prediction: np.ndarray
    ground_truth: Optional[np.ndarray]  # None: the image has no ground-truth mask
    class_names: Sequence[str]


@dataclass(frozen=True, eq=False)
class Panel:
    """One picture of one input image."""

    name: str  # "input", "ground_truth", "prediction" or "featmap/<layer>"; unique within an image
    picture: np.ndarray  # (H, W, 3) RGB uint8
    caption: str
    labels: Optional[LabelMaps] = None  # the input panel: its prediction and ground truth
    layer: Optional[str] = None  # a feature-map panel: the layer drawn
    stats: Optional[Mapping[str, float]] = None  # its activation statistics; None where not computed
