"""One colour scale over the shards of a job: `normalize.mode=shared` and pca_rgb's shared basis with shards.

Both fit a job's colour scale on all of its images before drawing any: each layer's value range
over the run (normalize), each layer's PCA basis (pca_rgb). A shard sees only its slice, so a
sharded job fits in two launches of the same command:

1. Each shard job runs the model over its slice, draws nothing, and writes what it saw to
   `<sweep>/featvis_fits/<unit>/<shard>.npz` (plain arrays, written to a temporary name and
   renamed): per layer the count, min and max of its maps (normalize), or the pixel count, mean
   and scatter of its channel vectors (pca_rgb). A shard that then finds every shard's part
   draws at once (under the basic launcher: the last one); the others end `fitted` (exit code 4)
   and the sweep's summary says to launch the same sweep again.
2. Launched again into the same folder, each shard merges the N parts (min of mins and max of
   maxes: the unsharded job's range exactly; moments by Chan et al.'s parallel formula: its basis
   to float64 rounding) and draws its slice with that scale, as the unsharded job would, without
   holding every image (the range is known before the first is drawn).

`<unit>` is a digest of the job's resolved config without `shard`, `threads` and `device`: the
same for every shard of the job, different for any other job.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from featvis.config.schema import NormalizeMode
from featvis.data.batches import same_shape_batches
from featvis.data.images import Sample, iter_loaded
from featvis.engine.drawer import observe_ranges
from featvis.engine.session import Session
from featvis.errors import FittedOnlyError
from featvis.io import write_atomic
from featvis.pipeline.resume import digest
from featvis.reduce.base import Reduction
from featvis.render.scales import SharedRange

log = logging.getLogger(__name__)

FITS = "featvis_fits"
RANGES, BASIS = "ranges", "basis"  # what a part holds: normalize's ranges, or pca_rgb's moments
_PER_SHARD = ("shard", "threads", "device")  # config keys that differ between the shards of one job

PerLayer = Dict[str, Dict[str, np.ndarray]]


def unit_key(config: Mapping[str, Any]) -> str:
    """The same for every shard of a job (its resolved config without what differs per shard)."""
    return digest({k: v for k, v in config.items() if k not in _PER_SHARD})[:16]


class ShardFits:
    """The parts of one sharded job's colour scale, one file per shard, in the sweep folder."""

    def __init__(self, sweep_dir: Path, config: Mapping[str, Any], shard: int, shards: int, kind: str) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.folder = self.sweep_dir / FITS / unit_key(config)
        self.shard, self.shards, self.kind = shard, shards, kind

    def _path(self, shard: int) -> Path:
        return self.folder / f"{shard}.npz"

    def mine(self) -> bool:
        """Whether this shard's part is written."""
        return self._path(self.shard).is_file()

    def write(self, per_layer: PerLayer, images: int) -> Path:
        """This shard's part: `per_layer` {layer: {field: array}} over its `images` images."""
        layers = list(per_layer)
        meta = {"kind": self.kind, "shard": self.shard, "shards": self.shards, "images": images, "layers": layers}
        arrays = {f"{i}/{name}": np.asarray(value) for i, layer in enumerate(layers)
                  for name, value in per_layer[layer].items()}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_atomic(self._path(self.shard), buffer.getvalue())

    def parts(self) -> Optional[List[PerLayer]]:
        """Every shard's part, in shard order; None while any is missing."""
        paths = [self._path(k) for k in range(self.shards)]
        if not all(p.is_file() for p in paths):
            return None
        return [self._read(p) for p in paths]

    def missing(self) -> List[int]:
        return [k for k in range(self.shards) if not self._path(k).is_file()]

    def _read(self, path: Path) -> PerLayer:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("kind") != self.kind or meta.get("shards") != self.shards:
                raise ValueError(f"{path} holds a {meta.get('kind')} fit of {meta.get('shards')} shards, not "
                                 f"a {self.kind} fit of {self.shards}: remove {self.folder} and launch again")
            out: PerLayer = {layer: {} for layer in meta["layers"]}
            for key in data.files:
                if key != "meta":
                    i, name = key.split("/", 1)
                    out[meta["layers"][int(i)]][name] = data[key]
        return out

    def stamp(self) -> str:
        """A digest of the parts (for the job's pieces: drawn with this scale)."""
        return digest({str(k): [(s := self._path(k).stat()).st_size, s.st_mtime_ns] for k in range(self.shards)})


def whole_split_scale(cfg: Any, reduction: Reduction) -> Optional[str]:
    """What of the pictures' colours is fitted over all of a job's images: pca_rgb's basis, normalize's range."""
    if reduction.needs_first_pass(reduction.config):
        return BASIS
    if cfg.normalize.mode == NormalizeMode.shared and not reduction.draws_rgb:
        return RANGES
    return None


def for_shard(cfg: Any, job: Any, resolved: Dict[str, Any], reduction: Reduction) -> Optional[ShardFits]:
    """The parts of this job's scale when it is a shard of a job whose colours span every image; else None."""
    kind = whole_split_scale(cfg, reduction)
    if kind is None or cfg.shard is None or cfg.shards <= 1 or job.sweep_dir is None:
        return None
    return ShardFits(job.sweep_dir, resolved, cfg.shard, cfg.shards, kind)


def fitted_scale(fits: ShardFits, cfg: Any, session: Session, samples: List[Sample]
                 ) -> Optional[Dict[str, SharedRange]]:
    """The whole split's colour scale from every shard's part: normalize's ranges
    (returned, for the drawer) or pca_rgb's basis (fitted in the session). This shard's part is fitted
    first if it is not there; FittedOnlyError while another shard's is missing."""
    parts = fits.parts()
    if parts is None and not fits.mine():
        log.info("shard %d of %d: fitting the %s over its %d images (the whole split's scale is merged from "
                 "every shard's)", cfg.shard, cfg.shards, fits.kind, len(samples))
        fits.write(_fit_slice(fits.kind, session, samples), len(samples))
        parts = fits.parts()
    if parts is None:
        missing = fits.missing()
        raise FittedOnlyError(
            f"shard {cfg.shard} of {cfg.shards} fitted its images' part of the "
            f"{'PCA basis' if fits.kind == BASIS else 'shared range'}, but shard(s) "
            f"{', '.join(map(str, missing))} have not yet: launch the same sweep again (the same command, "
            f"hydra.sweep.dir={fits.sweep_dir}) to draw with the whole split's scale")
    if fits.kind == BASIS:
        session.fit_on(parts)
        log.info("pca_rgb basis fitted on all %d shards' images", cfg.shards)
        return None
    ranges: Dict[str, SharedRange] = {}
    for part in parts:
        for layer, state in part.items():
            ranges.setdefault(layer, SharedRange()).merge(state)
    log.info("normalize.mode=shared: the range of each layer over all %d shards' images", cfg.shards)
    return ranges


def _fit_slice(kind: str, session: Session, samples: List[Sample]) -> PerLayer:
    """This shard's part of the scale: a pass of the model over its images, nothing drawn."""
    if kind == BASIS:
        session.fit(iter_loaded(samples, []))
        return session.reduction.observed()
    ranges: Dict[str, SharedRange] = {}
    try:
        for batch in same_shape_batches(iter_loaded(samples, []), session.batch_size):
            for recorded in session.record(batch):
                observe_ranges(ranges, recorded)
    finally:
        session.release()  # hooks off until the job draws
    return {layer: shared.state() for layer, shared in ranges.items()}
