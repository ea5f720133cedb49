"""Where do the classes separate? Each sketched job's sampled pixels by ground-truth class, layer by layer.

For every ok job of the sweep whose sketch holds classes (its images had ground truth), and
each of its layers (featvis.compare.embedding): the pixels on their first two principal
components and the nearest class-centroid accuracy of the classes (leave one image out), with
the chance level beside it. The summary draws a picture per layer with a panel per job side
by side (`embedding_<k>.png`, points coloured with the model's palette, a legend of the classes
present) and lists the numbers in summary.json's `class_separability`: over the layers, a curve
of where the classes come apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from cachetools import LRUCache

from featvis.compare.embedding import TSNE_POINTS, Separability, gather, project_2d, project_tsne, separability
from featvis.compare.sketch import open_sketch
from featvis.record.sampling import subsample
from featvis.sweep.results import JobRecord

PCA, TSNE = "pca", "tsne"  # compare.embedding
_CACHE: "LRUCache[Tuple[Any, str, str], Optional[JobLayer]]" = LRUCache(maxsize=10_000)  # by the sketch's stamps


@dataclass
class JobLayer:
    """One job's pixels in one layer: their 2-D view and how apart the classes are."""

    job: str
    layer: str
    coords: np.ndarray  # (N, 2): every pixel (pca), or t-SNE's subsample
    classes: np.ndarray  # (N,) the classes of those points
    share: Optional[float]  # the variance the two components hold (pca; None for t-SNE)
    numbers: Separability

    def to_json(self) -> Dict[str, Any]:
        n = self.numbers
        return {"job": self.job, "layer": self.layer, "accuracy": n.accuracy, "chance": n.chance,
                "pixels": n.pixels, "classes": n.classes, "pca_variance": self.share}


@dataclass
class Embeddings:
    """Every sketched job with classes, layer by layer; the class names and colours of the first."""

    layers: Dict[str, List[JobLayer]]  # layer -> a panel per job, in job order
    names: List[str]
    palette: List[List[int]]
    files: Dict[str, str]  # layer -> its picture in the summary folder (written by the summary)
    method: str = PCA  # compare.embedding: pca | tsne

    def to_json(self) -> Dict[str, Any]:
        return {"class_separability": [entry.to_json() for entries in self.layers.values() for entry in entries],
                "embeddings": dict(self.files), "embedding_method": self.method}


def embed(jobs: Sequence[JobRecord], metas: Dict[Any, Dict[str, Any]], paths: Dict[Any, Tuple[Any, ...]],
          stamps: Callable[[Any], Any]) -> Optional[Embeddings]:
    """The embeddings of `jobs` (ok, with a sketch: their metas and files); None when no sketch has classes."""
    layers: Dict[str, List[JobLayer]] = {}
    first: Optional[Dict[str, Any]] = None
    method = next((str(meta.get("embedding") or PCA) for meta in metas.values()), PCA)  # the first job's
    for job in jobs:
        meta = metas[job.dir]
        sketch = None
        for layer in meta["layers"]:
            key = (stamps(paths[job.dir]), layer, method)
            if key not in _CACHE:
                sketch = sketch or open_sketch(paths[job.dir])
                _CACHE[key] = _one(job.name, sketch, layer, method)
            found = _CACHE[key]
            if found is not None:
                layers.setdefault(layer, []).append(found)
                first = first or meta
    if first is None:
        return None
    return Embeddings(layers, list(first.get("classes") or []), [list(c) for c in first.get("palette") or []], {},
                      method)


def _one(name: str, sketch: Any, layer: str, method: str) -> Optional[JobLayer]:
    pixels = gather(sketch, layer)
    if pixels is None:
        return None
    numbers = separability(pixels)  # on every pixel's full features, whatever the view
    if method == TSNE:
        chosen = subsample(len(pixels.classes), TSNE_POINTS)
        return JobLayer(name, layer, project_tsne(pixels.features[chosen]), pixels.classes[chosen], None, numbers)
    coords, share = project_2d(pixels.features)
    return JobLayer(name, layer, coords, pixels.classes, share, numbers)
