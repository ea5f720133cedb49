"""Forward passes kept in this process for other jobs: the model runs once per (model, image, layers).

The cache itself; which jobs share it is the sweep's plan (featvis.sweep.shared_forward).
What is kept is small: the prediction (label map and metainfo; the logits are dropped)
and the already reduced maps, not the layers' outputs (with their compare sketches when the
group keeps sketches). An entry is dropped once every other job of its group has taken it.
At most FEATVIS_FORWARD_CACHE_MB (default 1024) are kept: when full, new forwards are not
kept (the first images stay, so the next job reuses those and runs the model on the rest),
and a job that misses an entry runs the model as usual. Entries are keyed by the loaded
model object, the group's key (reduction) and the image file's path, size and modification time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from mmseg.structures import SegDataSample

from featvis.errors import env_number
from featvis.model.load import LoadedModel
from featvis.record.layers import Selected
from featvis.reduce.base import Reduced

log = logging.getLogger(__name__)

ByLayer = Dict[str, Dict[str, List[Reduced]]]  # layer name -> {sub-name: [Reduced]}


@dataclass
class Entry:
    owner: LoadedModel  # holds the model, so the id() in the key stays its own while the entry lives
    sample: Any  # SegDataSample with pred_sem_seg and metainfo only
    layers: ByLayer
    skipped: Dict[str, Dict[str, str]]  # layer name -> {sub-name: why it has no map}
    uses_left: int  # jobs of the group that have not taken it yet
    nbytes: int


_ENTRIES: Dict[Tuple, Entry] = {}
_full_warned: List[bool] = []  # the "cache full" line is logged once per process


def capacity_bytes() -> int:
    return int(env_number("FEATVIS_FORWARD_CACHE_MB", 1024) * 2 ** 20)


def clear() -> None:
    _ENTRIES.clear()
    _full_warned.clear()


def held_bytes() -> int:
    return sum(e.nbytes for e in _ENTRIES.values())


class Sharing:
    """One job's part in its group: which layers to record beyond its own, and the kept forwards."""

    def __init__(self, loaded: LoadedModel, key: str, own: Sequence[Selected], extra: Sequence[Selected],
                 jobs: int) -> None:
        self.loaded, self.key, self.jobs = loaded, key, jobs
        self.own = [layer.name for layer in own]
        self.extra = list(extra)
        self._warned: Set[str] = set()  # sub-names whose problem this job has logged

    def _key(self, image_path: Path) -> Tuple:
        stat = Path(image_path).stat()
        return id(self.loaded), self.key, str(Path(image_path).resolve()), stat.st_size, stat.st_mtime_ns

    def take(self, image_path: Path) -> Optional[Tuple[Any, ByLayer]]:
        """The kept forward of this image, if it has every layer of this job; warns as the recorder would."""
        key = self._key(image_path)
        entry = _ENTRIES.get(key)
        if entry is None or any(name not in entry.layers for name in self.own):
            return None
        entry.uses_left -= 1
        if entry.uses_left <= 0:
            del _ENTRIES[key]
        for name in self.own:  # once per job, as the recorder would have
            for sub, why in entry.skipped.get(name, {}).items():
                if sub not in self._warned:
                    self._warned.add(sub)
                    log.warning("layer %s is not drawn: %s", sub, why)
        return entry.sample, entry.layers

    def keep(self, image_path: Path, sample: Any, layers: ByLayer, skipped: Dict[str, Dict[str, str]]) -> None:
        """Keep this image's forward for the group's other jobs, if it fits."""
        light = _light(sample)
        entry = Entry(self.loaded, light, layers, {k: dict(v) for k, v in skipped.items()}, self.jobs - 1,
                      _nbytes(light, layers))
        if entry.uses_left <= 0:
            return
        if held_bytes() + entry.nbytes > capacity_bytes():
            # Full: keep what is kept. The group's next job reads the images in the same
            # order, so evicting the oldest entries for this one would make it miss them all.
            if not _full_warned:
                _full_warned.append(True)
                log.info("kept forward passes reached FEATVIS_FORWARD_CACHE_MB=%s MiB; later jobs of the "
                         "sweep run the model again on the images that did not fit", capacity_bytes() >> 20)
            return
        _ENTRIES[self._key(image_path)] = entry


def _light(sample: Any) -> Any:
    """The sample without its logits (K x H x W floats): the prediction and metainfo are what is drawn."""
    light = SegDataSample(metainfo=sample.metainfo)
    light.pred_sem_seg = sample.pred_sem_seg
    return light


def _nbytes(sample: Any, layers: ByLayer) -> int:
    size = sample.pred_sem_seg.data.element_size() * sample.pred_sem_seg.data.nelement()
    for subs in layers.values():
        for per_item in subs.values():
            size += sum(r.maps.element_size() * r.maps.nelement() for r in per_item)
            size += sum(r.sketch.nbytes for r in per_item if r.sketch is not None)
    return size
