"""What a job keeps for comparing its layers with another job's: a sketch per image.

For each image and each drawn layer (sub-name, as in the pictures: `backbone[2]`):

- the layer's full C-dimensional features at P pixel positions, float16 (P x C). The
  positions are a seeded sample of normalized image coordinates (`positions(P, seed)`),
  the same for every job and every layer, so two jobs' rows are the same image points
  (a paired comparison); a layer at 1/8 of the input takes the map cell under each point;
- the layer's first reduced map (what is drawn), float16 at the map's own size, for
  difference maps;
- when the image has ground truth, the class under each position (P,) int16, -1 where
  none (featvis.record.sampling.classes_at), for per-class similarity; and the model's
  predicted class under each position, the same way (per-class similarity of images without
  ground truth); the meta's `classes` names them.

It is written once per job, `<job>/featvis/sketch.npz` (moved into place with the rest of
the job's results: a failed job leaves none), an npz of plain arrays (no pickle: reading
one runs no code) with a JSON `meta` entry: version, pixels, seed, the layers and images in
order and what the job ran (model config, checkpoint, reduction). Size per layer per image:
P x C x 2 bytes plus the map (P=256: 64 KiB for 128 channels, 1 MiB for 2048). A writer
given a folder to `stream` to writes each array there as it comes, so a job's memory stays
flat whatever its number of images; the file is the same.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from featvis.io import write_atomic
from featvis.record.sampling import positions, sample  # noqa: F401 (the sketch's names for them)

SKETCH_FILE = "sketch.npz"
TRUTH, PREDICTED = "cls", "pred"  # the classes under the sampled positions: the ground truth's, the prediction's
VERSION = 1


@dataclass
class SketchWriter:
    """Collects a job's sketches image by image; `write` puts them in one npz file.

    With `stream` (a folder), the arrays are not held: each goes into `<stream>/sketch.npz`
    as it is added, and `write` adds the meta entry and closes the file (moving it to its
    folder if that is another). A job streams into its staging folder, so a job that fails
    before `write` leaves no sketch among its results.
    """

    pixels: int
    seed: int
    meta: Dict[str, Any] = field(default_factory=dict)  # what the job ran: config, checkpoint, reduction
    layers: List[str] = field(default_factory=list)
    images: List[str] = field(default_factory=list)
    _arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    stream: Optional[Path] = None  # a folder: write each array there as it comes (see the class docstring)
    _zip: Optional[zipfile.ZipFile] = field(default=None, repr=False)
    _streamed: Set[str] = field(default_factory=set, repr=False)  # keys written to the stream

    def add(self, stem: str, layer: str, features: np.ndarray, reduced_map: Optional[np.ndarray]) -> None:
        """One layer of one image: its sampled features (P x C) and its first reduced map (H x W)."""
        if stem not in self.images:
            self.images.append(stem)
        if layer not in self.layers:
            self.layers.append(layer)
        i, j = self.images.index(stem), self.layers.index(layer)
        self._put(f"feat/{i}/{j}", np.asarray(features, np.float16))
        if reduced_map is not None:
            self._put(f"map/{i}/{j}", np.asarray(reduced_map, np.float16))

    def add_classes(self, stem: str, classes: np.ndarray, kind: str = TRUTH) -> None:
        """The ground-truth class (`kind=TRUTH`) or the predicted one (`PREDICTED`) under each sampled position
        of image `stem` (P,), -1 where none."""
        if stem not in self.images:
            self.images.append(stem)
        self._put(f"{kind}/{self.images.index(stem)}", np.asarray(classes, np.int16))

    def _put(self, key: str, array: np.ndarray) -> None:
        if self.stream is None:
            self._arrays[key] = array
            return
        if key in self._streamed:  # a zip entry cannot be replaced
            raise ValueError(f"sketch: {key} was added twice (the same image and layer)")
        if self._zip is None:
            Path(self.stream).mkdir(parents=True, exist_ok=True)
            self._zip = zipfile.ZipFile(Path(self.stream) / SKETCH_FILE, "w", zipfile.ZIP_STORED, allowZip64=True)
        with self._zip.open(key + ".npy", "w", force_zip64=True) as f:  # as np.savez writes each entry
            np.lib.format.write_array(f, array, allow_pickle=False)
        self._streamed.add(key)

    def _meta(self) -> np.ndarray:
        meta = {"version": VERSION, "pixels": self.pixels, "seed": self.seed, "layers": self.layers,
                "images": self.images, **self.meta}
        return np.array(json.dumps(meta))

    def write(self, folder: Path) -> Optional[Path]:
        """`<folder>/sketch.npz`; None when nothing was added."""
        if self.stream is not None:
            return self._finish_stream(Path(folder))
        if not self._arrays:
            return None
        buffer = io.BytesIO()
        np.savez(buffer, meta=self._meta(), **self._arrays)
        return write_atomic(Path(folder) / SKETCH_FILE, buffer.getvalue())

    def _finish_stream(self, folder: Path) -> Optional[Path]:
        if self._zip is None:
            return None
        with self._zip.open("meta.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, self._meta(), allow_pickle=False)
        self._zip.close()
        self._zip = None
        path = folder / SKETCH_FILE
        if (Path(self.stream) / SKETCH_FILE).resolve() != path.resolve():
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(Path(self.stream) / SKETCH_FILE, path)
        return path


class Sketch:
    """A job's sketch file, read without pickle."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with np.load(self.path, allow_pickle=False) as data:
            self.meta: Dict[str, Any] = json.loads(str(data["meta"]))
            self._arrays = {k: data[k] for k in data.files if k != "meta"}
        if self.meta.get("version") != VERSION:
            raise ValueError(f"{self.path}: sketch version {self.meta.get('version')}, featvis reads {VERSION}")
        self.layers: List[str] = list(self.meta["layers"])
        self.images: List[str] = list(self.meta["images"])

    def _key(self, kind: str, stem: str, layer: str) -> Optional[str]:
        if stem not in self.images or layer not in self.layers:
            return None
        key = f"{kind}/{self.images.index(stem)}/{self.layers.index(layer)}"
        return key if key in self._arrays else None

    def features(self, stem: str, layer: str) -> Optional[np.ndarray]:
        """(P x C) float16 features of `layer` on image `stem`; None when the job did not record them."""
        key = self._key("feat", stem, layer)
        return None if key is None else self._arrays[key]

    def map(self, stem: str, layer: str) -> Optional[np.ndarray]:
        """The first reduced map (H x W, float16) of `layer` on image `stem`; None when absent."""
        key = self._key("map", stem, layer)
        return None if key is None else self._arrays[key]

    def classes(self, stem: str, kind: str = TRUTH) -> Optional[np.ndarray]:
        """The ground-truth (TRUTH) or predicted (PREDICTED) class under each sampled position of image `stem`
        (P,), -1 where none; None when the sketch has none (no ground truth; a sketch older than predictions)."""
        if stem not in self.images:
            return None
        return self._arrays.get(f"{kind}/{self.images.index(stem)}")

    def pairs(self, other: "Sketch") -> List[Tuple[str, str]]:
        """(image, layer) both sketches hold features of, in this sketch's order."""
        return [(stem, layer) for stem in self.images for layer in self.layers
                if self.features(stem, layer) is not None and other.features(stem, layer) is not None]


class ShardedSketch:
    """The sketches of a job's shards (featvis.sweep.shards) read as one: its images are theirs, in shard order.

    A shard draws its own images of one input list, so no image is in two parts; the layers and
    the sampled positions (pixels, seed) are the same in every part. CKA and change accumulate
    sums image by image, so a sharded job's numbers are the unsharded job's.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.parts = [Sketch(p) for p in paths]
        self.path = self.parts[0].path
        first = self.parts[0].meta
        for part in self.parts[1:]:
            if (part.meta.get("pixels"), part.meta.get("seed")) != (first.get("pixels"), first.get("seed")):
                raise ValueError(f"{part.path}: sampled at other positions than {self.path}")
        self.layers: List[str] = list(dict.fromkeys(layer for part in self.parts for layer in part.layers))
        self.images: List[str] = [stem for part in self.parts for stem in part.images]
        self.meta: Dict[str, Any] = {**first, "layers": self.layers, "images": self.images}
        self._owner = {stem: part for part in self.parts for stem in part.images}

    def features(self, stem: str, layer: str) -> Optional[np.ndarray]:
        part = self._owner.get(stem)
        return None if part is None else part.features(stem, layer)

    def map(self, stem: str, layer: str) -> Optional[np.ndarray]:
        part = self._owner.get(stem)
        return None if part is None else part.map(stem, layer)

    def classes(self, stem: str, kind: str = TRUTH) -> Optional[np.ndarray]:
        part = self._owner.get(stem)
        return None if part is None else part.classes(stem, kind)


def open_sketch(paths: Sequence[Path]) -> "Sketch | ShardedSketch":
    """One job's sketch: its file, or its shards' files read as one."""
    return Sketch(paths[0]) if len(paths) == 1 else ShardedSketch(paths)
