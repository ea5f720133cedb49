"""Do the classes separate in this layer? Sampled pixel features by ground-truth class: a 2-D view and a number.

From a job's sketch (featvis.compare.sketch): each image's sampled pixels, their features in
a layer and the ground-truth class under them (pixels without a class left out).

- `project_2d`: the pixels' features on their first two principal components (centred, exact
  SVD; signs fixed so the largest loading is positive): a view of how the classes lie;
- `separability`: nearest class-centroid accuracy over the full features, each image's pixels
  classified by centroids fitted on the other images' pixels (leave one image out: a class
  seen in one image only is not counted for it; with a single image, centroids on all of it),
  with the chance level (the most frequent class's share) beside it. 1 = every pixel is
  nearer its own class's mean than any other's: the classes are apart in this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np


@dataclass
class Pixels:
    """One layer's sampled pixels with a class, over a job's images."""

    features: np.ndarray  # (N, C) float64
    classes: np.ndarray  # (N,) int
    images: np.ndarray  # (N,) the image each came from (its index)


def gather(sketch: Any, layer: str) -> Optional[Pixels]:
    """The layer's sampled pixels that have a class, from every image of `sketch`; None when none do."""
    feats: List[np.ndarray] = []
    classes: List[np.ndarray] = []
    images: List[np.ndarray] = []
    for i, stem in enumerate(sketch.images):
        x, c = sketch.features(stem, layer), sketch.classes(stem)
        if x is None or c is None or len(c) != x.shape[0]:
            continue
        keep = c >= 0
        feats.append(np.asarray(x[keep], np.float64))
        classes.append(np.asarray(c[keep], np.int64))
        images.append(np.full(int(keep.sum()), i))
    if not feats or sum(len(c) for c in classes) == 0:
        return None
    return Pixels(np.concatenate(feats), np.concatenate(classes), np.concatenate(images))


def project_2d(features: np.ndarray) -> Tuple[np.ndarray, float]:
    """(N, 2) coordinates on the first two principal components, and the share of variance they hold."""
    centred = features - features.mean(0)
    if centred.shape[0] < 2 or not np.any(centred):
        return np.zeros((centred.shape[0], 2)), 0.0
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    coords = centred @ vt.T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    total = float((s ** 2).sum())
    return coords, float((s[:2] ** 2).sum() / total) if total > 0 else 0.0


@dataclass
class Separability:
    accuracy: Optional[float]  # nearest class-centroid accuracy (None: fewer than two classes)
    chance: Optional[float]  # the most frequent class's share of the pixels counted
    pixels: int  # pixels counted
    classes: int  # classes present


def separability(pixels: Pixels) -> Separability:
    """Nearest class-centroid accuracy, leave one image out (see the module's docstring)."""
    present = np.unique(pixels.classes)
    if present.size < 2:
        return Separability(None, None, int(pixels.classes.size), int(present.size))
    groups = np.unique(pixels.images)
    right = counted = 0
    counts: dict = {}
    for image in groups:
        test = pixels.images == image
        train = ~test if groups.size > 1 else np.ones_like(test)
        known = np.unique(pixels.classes[train])
        if known.size < 2:
            continue
        centroids = np.stack([pixels.features[train & (pixels.classes == c)].mean(0) for c in known])
        x, truth = pixels.features[test], pixels.classes[test]
        seen = np.isin(truth, known)
        x, truth = x[seen], truth[seen]
        if truth.size == 0:
            continue
        # squared distances to every centroid without forming N x K x C
        d = (x ** 2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(1)[None, :]
        right += int((known[d.argmin(1)] == truth).sum())
        counted += int(truth.size)
        for c, n in zip(*np.unique(truth, return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(n)
    if counted == 0:
        return Separability(None, None, 0, int(present.size))
    return Separability(right / counted, max(counts.values()) / counted, counted, int(present.size))
