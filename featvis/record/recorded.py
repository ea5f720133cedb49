"""What the record stage hands on for one image: the decoded input, mmseg's prediction, the reduced maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from featvis.data import images as inputs
from featvis.reduce.base import Reduced


@dataclass
class Recorded:
    item: inputs.Loaded
    sample: Any  # mmseg's SegDataSample: prediction and the image's metainfo
    maps: Dict[str, List[Reduced]]

