"""What the record stage hands on for one image: the decoded input, mmseg's prediction, the reduced maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from featvis.data import images as inputs


@dataclass
class Reduced:
    maps: torch.Tensor  # (K, H, W) float32 on the CPU
    channels: Optional[List[int]] = None  # the channels kept, for captions (None: a mix of all)
    note: Optional[str] = None  # what a caption should add, e.g. the variance PCA explains
    # activation statistics of the full (C, H, W) map before reduction (set by the recorder):
    # {"mean", "std", "zero_fraction", "max"}; None where not computed (Grad-CAM)
    stats: Optional[Dict[str, float]] = None
    stride: Optional[float] = None  # input pixels per map pixel (8.0: a 1/8 map); set by the recorder
    # the full (C, H, W) map's features at the compare sample's pixels (featvis.compare.sketch):
    # P x C float16 on the CPU, set by the recorder when the job keeps a sketch; else None
    sketch: Optional[np.ndarray] = None


@dataclass
class ModelPass:
    """One image as a reduction that uses_gradients records it, running the model itself."""

    sample: Any  # mmseg's SegDataSample: the prediction, as inference_model returns it
    maps: Dict[str, Reduced]  # sub-name (as the recorder names it) -> its map, in the user's layer order


@dataclass
class Recorded:
    item: inputs.Loaded
    sample: Any  # mmseg's SegDataSample: prediction and the image's metainfo
    maps: Dict[str, List[Reduced]]

