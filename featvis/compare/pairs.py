"""One layer of two feature sets compared, the summary's numbers: linear CKA (plain and unbiased) and change.

Over the same sampled pixels of the same images (the pixels are the examples, paired by
position): CKA from `Accumulator` fed image by image, unbiased CKA from `UnbiasedAccumulator`
(each image's pixels a minibatch), and change = sum |b - a| / sum |a|, the relative mean
absolute difference (0 = the same features, 1 = as large as a's). `Pair` takes feature arrays
one image at a time (a training hook's drawings); `pair_numbers` two sketch files;
`class_numbers` the same per ground-truth class, over the sampled pixels of that class only.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from featvis.compare.cka import Accumulator, UnbiasedAccumulator
from featvis.compare.sketch import TRUTH, ShardedSketch, Sketch

LINEAR, UNBIASED = "linear", "unbiased"  # compare.estimator: which CKA a summary shows
MIN_CLASS_PIXELS = 32  # sampled pixels of a class over all images below which its numbers are not given

AnySketch = Union[Sketch, ShardedSketch]


class Numbers(NamedTuple):
    """One layer's numbers; None where undefined (a constant side, a baseline of zeros)."""

    cka: Optional[float]
    change: Optional[float]
    cka_unbiased: Optional[float] = None


class Pair:
    """(CKA, change) of one layer, accumulated image by image from (P, C) features of a and b."""

    def __init__(self, unbiased: bool = False, linear: bool = True) -> None:
        self.acc = Accumulator() if linear else None
        self.unbiased_acc = UnbiasedAccumulator() if unbiased else None
        self.diff = self.base = 0.0
        self.pixels = 0

    def add(self, x: np.ndarray, y: np.ndarray, where: str = "") -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{where}: {x.shape[0]} pixels against {y.shape[0]}")
        if self.acc is not None:
            self.acc.add(x, y)
        if self.unbiased_acc is not None:
            self.unbiased_acc.add(x, y)
        self.pixels += x.shape[0]
        if x.shape == y.shape:
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            self.diff += float(np.abs(y64 - x64).sum())
            self.base += float(np.abs(x64).sum())

    def value(self) -> Tuple[Optional[float], Optional[float]]:
        """(CKA, change)."""
        cka = self.acc.value() if self.acc is not None else float("nan")
        return (None if math.isnan(cka) else cka), (self.diff / self.base if self.base > 0 else None)

    def numbers(self) -> Numbers:
        unbiased = self.unbiased_acc.value() if self.unbiased_acc is not None else float("nan")
        return Numbers(*self.value(), None if math.isnan(unbiased) else unbiased)


def pair_numbers(a: AnySketch, b: AnySketch, layer: str) -> Numbers:
    """(CKA, change, unbiased CKA) of one layer over every image both sketches hold it for."""
    pair = Pair(unbiased=True)
    for stem in a.images:
        x, y = a.features(stem, layer), b.features(stem, layer)
        if x is not None and y is not None:
            pair.add(x, y, f"{layer} on {stem}")
    return pair.numbers()


class ClassNumbers(NamedTuple):
    """One layer's numbers over the sampled pixels of one class; None (and `few`) below MIN_CLASS_PIXELS."""

    pixels: int
    numbers: Optional[Numbers]


def class_numbers(a: AnySketch, b: AnySketch, layer: str, kind: str = TRUTH) -> Dict[int, ClassNumbers]:
    """Per class present (`kind`: the ground truth's, TRUTH, or the baseline's prediction, PREDICTED; under the
    sampled pixels of a, else b): the layer's unbiased CKA and change over that class's pixels of every
    image. {} when neither sketch holds classes. Not the plain linear CKA: its upward bias grows as the
    pixels get fewer, which a class's are (a few per image), and it would sum a C x C matrix per class."""
    pairs: Dict[int, Pair] = {}
    for stem in a.images:
        x, y = a.features(stem, layer), b.features(stem, layer)
        classes = a.classes(stem, kind)
        if classes is None and kind == TRUTH:
            classes = b.classes(stem, kind)
        if x is None or y is None or classes is None or len(classes) != x.shape[0]:
            continue
        for c in np.unique(classes):
            if c < 0:
                continue
            rows = classes == c
            pair = pairs.setdefault(int(c), Pair(unbiased=True, linear=False))
            pair.add(x[rows], y[rows], f"{layer} on {stem}, class {c}")
    return {c: ClassNumbers(p.pixels, p.numbers() if p.pixels >= MIN_CLASS_PIXELS else None)
            for c, p in sorted(pairs.items())}


class Matrix(NamedTuple):
    """Every layer of one sketch against every layer of another: rows b's layers, columns a's."""

    rows: List[str]
    cols: List[str]
    cka: np.ndarray  # (rows x cols), NaN where undefined
    cka_unbiased: np.ndarray


def layer_matrix(a: AnySketch, b: AnySketch, layers_a: Sequence[str], layers_b: Sequence[str]) -> Matrix:
    """CKA (plain and unbiased) of each of b's layers with each of a's, over the images both hold, at the same
    sampled image points: layers of any channel count and resolution compare (two different models)."""
    biased = {(i, j): Accumulator() for i in range(len(layers_b)) for j in range(len(layers_a))}
    unbiased = {key: UnbiasedAccumulator() for key in biased}
    for stem in a.images:
        xs = [a.features(stem, layer) for layer in layers_a]
        ys = [b.features(stem, layer) for layer in layers_b]
        for (i, j), acc in biased.items():
            if xs[j] is not None and ys[i] is not None and xs[j].shape[0] == ys[i].shape[0]:
                acc.add(xs[j], ys[i])
                unbiased[(i, j)].add(xs[j], ys[i])
    shape = (len(layers_b), len(layers_a))
    linear = np.array([biased[(i, j)].value() for i in range(shape[0]) for j in range(shape[1])]).reshape(shape)
    fair = np.array([unbiased[(i, j)].value() for i in range(shape[0]) for j in range(shape[1])]).reshape(shape)
    return Matrix(list(layers_b), list(layers_a), linear, fair)
