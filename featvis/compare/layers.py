"""Which layers of one job carry the same information: the linear CKA of every pair of its layers.

`LayerSimilarity` is fed one image at a time with the job's sketch rows (featvis.compare.sketch:
each layer's features at the same P pixel positions of the image), so two layers' rows are
the same image points, as CKA needs. Each pair of layers has its own
featvis.compare.cka.Accumulator, fed only the images both layers gave a map of; the value
over all images is the same as stacking their rows. Memory: 8 bytes x (p^2 + q^2 + pq) per
pair of layers with p and q channels, whatever the number of images (ANN R50's four stages,
256 to 2048 channels: about 170 MB); more than MAX_BYTES (many wide layers, a dense preset on
a large model) is refused on the first image, one line naming the fix. Time: about n x
(p^2 + q^2 + pq) x 2 flops per pair and image of n pixels (ANN R50's four stages: ~0.4 s per
image on two CPU cores). The diagonal is 1 (NaN for a layer whose features never vary), and
the matrix is symmetric.

    similarity = LayerSimilarity()
    for image in images:
        similarity.add({layer: features (P x C) for each layer})
    similarity.layers, similarity.matrix()   # names, L x L
    write_csv(path, similarity.layers, similarity.matrix())
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from featvis.compare.cka import Accumulator
from featvis.errors import ConfigError
from featvis.io import write_atomic

MAX_BYTES = 4 * 2 ** 30  # the CKA sums of every pair of layers, in float64


class LayerSimilarity:
    """Linear CKA between every pair of a job's layers, accumulated image by image."""

    def __init__(self) -> None:
        self.layers: List[str] = []  # in first-seen order
        self._pairs: Dict[Tuple[int, int], Accumulator] = {}  # (i, j), i < j
        self._first: List[Optional[np.ndarray]] = []  # each layer's first row, to tell whether it ever varies
        self._varies: List[bool] = []  # whether a layer's features differ between any two rows (of any images)

    def add(self, features: Mapping[str, np.ndarray]) -> None:
        """One image: {layer: its features (P x C)} at the same P positions for every layer."""
        rows: List[Tuple[int, np.ndarray]] = []
        for layer, x in features.items():
            if layer not in self.layers:
                self.layers.append(layer)
                self._first.append(None)
                self._varies.append(False)
            i = self.layers.index(layer)
            x = np.asarray(x, np.float64)  # converted once per image, not once per pair
            if rows and x.shape[0] != rows[0][1].shape[0]:
                raise ValueError(f"layer similarity: {layer} has {x.shape[0]} rows, "
                                 f"{self.layers[rows[0][0]]} {rows[0][1].shape[0]}: not the same positions")
            if x.size and not self._varies[i]:
                first = self._first[i] = x[0] if self._first[i] is None else self._first[i]
                self._varies[i] = x.shape[1] != first.shape[0] or bool((x != first).any())
            rows.append((i, x))
        self._check_size(rows)
        for a, (i, x) in enumerate(rows):
            for j, y in rows[a + 1:]:
                key, (p, q) = ((i, j), (x, y)) if i < j else ((j, i), (y, x))
                self._pairs.setdefault(key, Accumulator()).add(p, q)

    def _check_size(self, rows: List[Tuple[int, np.ndarray]]) -> None:
        """Refuse, before allocating them, CKA sums that would not fit (checked as new pairs appear)."""
        new = [(x.shape[1], y.shape[1]) for a, (i, x) in enumerate(rows) for j, y in rows[a + 1:]
               if (min(i, j), max(i, j)) not in self._pairs]
        if not new:
            return
        held = sum(acc.xx.size + acc.yy.size + acc.yx.size for acc in self._pairs.values() if acc.xx is not None)
        need = 8 * (held + sum(p * p + q * q + p * q for p, q in new))
        if need > MAX_BYTES:
            raise ConfigError(f"compare.layer_similarity: {len(self.layers)} layers "
                              f"({sum(x.shape[1] for _, x in rows)} channels in all) need {need / 2 ** 30:.1f} GiB "
                              f"for their CKA sums, over the {MAX_BYTES / 2 ** 30:.0f} GiB limit: choose fewer or "
                              "narrower layers (layers=backbone, or layers.names=[...])")

    def matrix(self) -> np.ndarray:
        """L x L linear CKA, layers in `self.layers` order; NaN where it cannot be told."""
        n = len(self.layers)
        out = np.full((n, n), np.nan)
        for i in range(n):
            out[i, i] = 1.0 if self._varies[i] else np.nan
        for (i, j), acc in self._pairs.items():
            out[i, j] = out[j, i] = acc.value()
        return out


def csv_text(layers: Sequence[str], matrix: np.ndarray) -> str:
    """A square table: a header of layer names, then one row per layer led by its name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layer", *layers])
    for layer, row in zip(layers, matrix):
        writer.writerow([layer, *("nan" if np.isnan(v) else f"{v:.6f}" for v in row)])
    return buffer.getvalue()


def write_csv(path: Path, layers: Sequence[str], matrix: np.ndarray) -> Path:
    return write_atomic(path, csv_text(layers, matrix))


def read_csv(path: Path) -> Tuple[List[str], np.ndarray]:
    """(layers, matrix) of a table `write_csv` wrote."""
    rows = list(csv.reader(io.StringIO(Path(path).read_text())))
    layers = rows[0][1:]
    return layers, np.array([[float(v) for v in row[1:]] for row in rows[1:]], dtype=np.float64)
