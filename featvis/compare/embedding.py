"""Do the classes separate in this layer? Sampled pixel features by ground-truth class: a 2-D view and a number.

From a job's sketch (featvis.compare.sketch): each image's sampled pixels, their features in
a layer and the ground-truth class under them (pixels without a class left out).

- `project_2d`: the pixels' features on their first two principal components (centred; exact
  or a seeded randomized fit for many pixels and channels; signs fixed so the largest loading
  is positive): a view of how the classes lie; `project_tsne`: scikit-learn's t-SNE of them
  (seeded, initialised from the PCA, at most TSNE_POINTS points), which pulls clusters apart;
- `separability`: nearest class-centroid accuracy over the full features, balanced (the mean
  of the classes' recalls, so that a large background does not make it look high), each
  image's pixels classified by centroids fitted on the other images' pixels (leave one image
  out: a class seen in one image only is not counted for it; with a single image, centroids
  on all of it), with chance (1 / the number of classes counted) beside it. 1 = every pixel
  is nearer its own class's mean than any other's: the classes are apart in this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

EXACT = 256  # up to this many pixels or channels, the components are exact (SVD)


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


def project_2d(features: np.ndarray, iterations: int = 6, oversample: int = 8) -> Tuple[np.ndarray, float]:
    """(N, 2) coordinates on the first two principal components, and the share of variance they hold.

    Exact (SVD) when the pixels or channels are few; above, a seeded subspace iteration (Halko et al.'s
    randomized range finder: O(N C q) per step instead of an SVD's O(N C min(N, C))), deterministic.
    """
    centred = np.asarray(features - features.mean(0), np.float32)
    total = float(np.square(centred, dtype=np.float64).sum())
    if centred.shape[0] < 2 or total == 0:
        return np.zeros((centred.shape[0], 2)), 0.0
    if min(centred.shape) <= EXACT:
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        q = min(2 + oversample, *centred.shape)
        y, _ = np.linalg.qr(centred @ np.random.default_rng(0).standard_normal((centred.shape[1], q), np.float32))
        for _ in range(iterations):
            z, _ = np.linalg.qr(centred.T @ y)
            y, _ = np.linalg.qr(centred @ z)
        _, s, vt = np.linalg.svd(y.T @ centred, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    coords = (centred @ vt.T).astype(np.float64)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, float((s[:2].astype(np.float64) ** 2).sum() / total)


TSNE_POINTS = 2000  # t-SNE's cost grows with the points: a seeded subsample above this


def project_tsne(features: np.ndarray, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) t-SNE coordinates of `features` (n <= TSNE_POINTS: pass `features[subsample(N, TSNE_POINTS)]`),
    seeded."""
    from sklearn.manifold import TSNE  # noqa: PLC0415 - lazy: ~1 s to import, only for compare.embedding=tsne

    n = features.shape[0]
    if n < 4:
        return np.zeros((n, 2))
    tsne = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(perplexity, (n - 1) / 3))
    return np.asarray(tsne.fit_transform(np.asarray(features, np.float32)), np.float64)


@dataclass
class Separability:
    accuracy: Optional[float]  # balanced nearest class-centroid accuracy (None: fewer than two classes)
    chance: Optional[float]  # 1 / the classes counted
    pixels: int  # pixels counted
    classes: int  # classes present


def separability(pixels: Pixels) -> Separability:
    """Nearest class-centroid accuracy, leave one image out (see the module's docstring)."""
    present = np.unique(pixels.classes)
    if present.size < 2:
        return Separability(None, None, int(pixels.classes.size), int(present.size))
    groups = np.unique(pixels.images)
    index = {c: k for k, c in enumerate(present)}
    labels = np.array([index[c] for c in pixels.classes])
    sums = np.zeros((groups.size, present.size, pixels.features.shape[1]))  # per image and class: sum of features
    counts = np.zeros((groups.size, present.size))
    for g, image in enumerate(groups):
        mine = pixels.images == image
        np.add.at(sums[g], labels[mine], pixels.features[mine])
        np.add.at(counts[g], labels[mine], 1)
    counted = 0
    tallies = np.zeros(present.size)  # pixels of each class classified
    hits = np.zeros(present.size)  # ... and classified right
    for g, image in enumerate(groups):
        test = pixels.images == image
        train_sums = sums.sum(0) - sums[g] if groups.size > 1 else sums.sum(0)  # leave this image out
        train_counts = counts.sum(0) - counts[g] if groups.size > 1 else counts.sum(0)
        known = np.flatnonzero(train_counts > 0)
        if known.size < 2:
            continue
        centroids = train_sums[known] / train_counts[known, None]
        seen = np.isin(labels[test], known)
        x, truth = pixels.features[test][seen], labels[test][seen]
        if truth.size == 0:
            continue
        # squared distances to every centroid without forming N x K x C
        d = (x ** 2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(1)[None, :]
        hits += np.bincount(truth[known[d.argmin(1)] == truth], minlength=present.size)
        counted += int(truth.size)
        tallies += np.bincount(truth, minlength=present.size)
    if counted == 0:
        return Separability(None, None, 0, int(present.size))
    scored = tallies > 0
    return Separability(float((hits[scored] / tallies[scored]).mean()), 1.0 / int(scored.sum()), counted,
                        int(present.size))
