"""One layer of two feature sets compared, the summary's two numbers: linear CKA and relative change.

Over the same sampled pixels of the same images (the pixels are the examples, paired by
position): CKA from `Accumulator` fed image by image, and change = sum |b - a| / sum |a|, the
relative mean absolute difference (0 = the same features, 1 = as large as a's). `Pair` takes
feature arrays one image at a time (a training hook's drawings); `pair_numbers` two sketch files.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from featvis.compare.cka import Accumulator
from featvis.compare.sketch import Sketch

Numbers = Tuple[Optional[float], Optional[float]]  # (CKA, change) of one layer; None where undefined


class Pair:
    """(CKA, change) of one layer, accumulated image by image from (P, C) features of a and b."""

    def __init__(self) -> None:
        self.acc = Accumulator()
        self.diff = self.base = 0.0

    def add(self, x: np.ndarray, y: np.ndarray, where: str = "") -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{where}: {x.shape[0]} pixels against {y.shape[0]}")
        self.acc.add(x, y)
        if x.shape == y.shape:
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            self.diff += float(np.abs(y64 - x64).sum())
            self.base += float(np.abs(x64).sum())

    def value(self) -> Numbers:
        cka = self.acc.value()
        return (None if math.isnan(cka) else cka), (self.diff / self.base if self.base > 0 else None)


def pair_numbers(a: Sketch, b: Sketch, layer: str) -> Numbers:
    """(CKA, change) of one layer over every image both sketches hold it for."""
    pair = Pair()
    for stem in a.images:
        x, y = a.features(stem, layer), b.features(stem, layer)
        if x is not None and y is not None:
            pair.add(x, y, f"{layer} on {stem}")
    return pair.value()
