"""Linear CKA: how much two sets of features of the same examples say the same thing.

For n examples with features X (n x p) and Y (n x q), centred on their means,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)

(Kornblith et al., "Similarity of Neural Network Representations Revisited", 2019). It
is 1 for the same features, and stays 1 when either side is scaled by a number or its
channels are rotated (any orthogonal transform), so it compares what a layer encodes, not
its basis; unrelated features give values near 0 (biased upward for few examples).

The examples here are pixels (featvis.compare.sketch): the same sampled positions of the
same images in both jobs, so the comparison is paired. `Accumulator` sums X^T X, Y^T Y,
Y^T X and the means image by image in float64, so CKA over a whole validation split needs
memory for p x q numbers, not for every pixel (the same value as stacking every image's
rows: centring uses the sums, Nguyen et al. 2021 accumulate the same way over minibatches).

This estimator is biased upwards when there are few examples for the channels: two
unrelated 256-channel feature sets over 768 pixels read about 0.25, not 0. `UnbiasedAccumulator`
is minibatch CKA from Song et al. (2012)'s unbiased HSIC, one image's pixels per minibatch
(Nguyen, Raghu and Kornblith 2021): unrelated features read near 0 whatever the number of
pixels, the same features 1. It measures how alike the layers are within each image (each
image's pixels centred on their own mean), where the plain estimator also counts how the
images differ from one another.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


class Accumulator:
    """Linear CKA between two feature sets, fed in chunks of paired rows (the same examples)."""

    def __init__(self) -> None:
        self.n = 0
        self.sx: Optional[np.ndarray] = None  # column sums
        self.sy: Optional[np.ndarray] = None
        self.xx: Optional[np.ndarray] = None  # X^T X
        self.yy: Optional[np.ndarray] = None
        self.yx: Optional[np.ndarray] = None  # Y^T X

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows of X (n x p) and Y (n x q) for the same n examples."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs the same examples on both sides: {x.shape[0]} rows against {y.shape[0]}")
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if self.xx is None:
            self.sx, self.sy = np.zeros(x.shape[1]), np.zeros(y.shape[1])
            self.xx, self.yy, self.yx = x.T @ x, y.T @ y, y.T @ x
        else:
            self.xx += x.T @ x
            self.yy += y.T @ y
            self.yx += y.T @ x
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.n += x.shape[0]

    def value(self) -> float:
        """CKA of everything added; NaN when either side is constant (no variance to compare)."""
        if self.n < 2 or self.xx is None:
            return float("nan")
        n, mx, my = self.n, self.sx / self.n, self.sy / self.n
        xx = self.xx - n * np.outer(mx, mx)  # centred: X_c^T X_c = X^T X - n m m^T
        yy = self.yy - n * np.outer(my, my)
        yx = self.yx - n * np.outer(my, mx)
        norm = np.linalg.norm(xx) * np.linalg.norm(yy)
        if not np.isfinite(norm) or norm <= 1e-30 * max(1.0, float(np.abs(self.xx).max() * np.abs(self.yy).max())):
            return float("nan")
        return float(np.clip(np.linalg.norm(yx) ** 2 / norm, 0.0, 1.0))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of X (n x p) and Y (n x q), paired by row."""
    acc = Accumulator()
    acc.add(x, y)
    return acc.value()


def hsic_unbiased(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC of two n x n Gram matrices (n >= 4); their diagonals are ignored."""
    n = gram_x.shape[0]
    kx, ky = gram_x.copy(), gram_y.copy()
    np.fill_diagonal(kx, 0.0)
    np.fill_diagonal(ky, 0.0)
    sx, sy = kx.sum(0), ky.sum(0)
    trace = float((kx * ky).sum())  # tr(Kx Ky): both symmetric
    return (trace + float(sx.sum()) * float(sy.sum()) / ((n - 1) * (n - 2))
            - 2.0 * float(sx @ sy) / (n - 2)) / (n * (n - 3))


class UnbiasedAccumulator:
    """Minibatch linear CKA from the unbiased HSIC, fed one minibatch (an image's pixels) at a time.

    Each minibatch gives HSIC_1(K, L), HSIC_1(K, K) and HSIC_1(L, L) of its linear Gram matrices
    K = X X^T and L = Y Y^T; CKA = sum HSIC_1(K, L) / sqrt(sum HSIC_1(K, K) * sum HSIC_1(L, L)).
    Each term is unbiased whatever the minibatch's size, so the value does not rise as pixels
    get fewer: unrelated features read near 0 (either sign). Memory: three numbers. A minibatch
    of fewer than 4 rows is left out (the estimator needs 4).
    """

    MIN_ROWS = 4

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = 0.0
        self.batches = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs the same examples on both sides: {x.shape[0]} rows against {y.shape[0]}")
        if x.shape[0] < self.MIN_ROWS:
            return
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        gram_x, gram_y = x @ x.T, y @ y.T
        self.xy += hsic_unbiased(gram_x, gram_y)
        self.xx += hsic_unbiased(gram_x, gram_x)
        self.yy += hsic_unbiased(gram_y, gram_y)
        self.batches += 1

    def value(self) -> float:
        """CKA of everything added; NaN when a side has no variance, or no minibatch had 4 rows."""
        if self.batches == 0 or not self.xx > 0 or not self.yy > 0:
            return float("nan")
        return float(self.xy / math.sqrt(self.xx * self.yy))


def unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased CKA of X (n x p) and Y (n x q), paired by row, as one minibatch."""
    acc = UnbiasedAccumulator()
    acc.add(x, y)
    return acc.value()
