"""Per-image resume of a sweep job that stopped part-way (a preempted shard, a killed node, Ctrl-C).

A job of a sweep draws into `<job>/featvis.partial/` (renamed to `featvis/` when it ends ok)
and, beside its pictures, leaves a piece per image in `featvis.partial/.pieces/`:

- `<n>.npz`, written when the image's sketch is taken (compare.*), before it is drawn: its
  sampled features and first reduced map per layer, plain arrays (read without pickle);
- `<n>.json`, written when every picture of the image is in the job's backends (the local
  files are on disk by then): its name, its panels and its mask's stray labels.

Both are written to a temporary name and renamed, so a piece is whole or absent. `job.json`
says which job wrote them: the sweep's id and a digest of the job's resolved config.

When the same sweep is launched again into its folder (featvis.sweep.manifest.resume), a job
that did not end ok finds its pieces: if they are its own (same sweep, same config), the
images they name are not drawn again: their pictures stay where they are, their sketches go
into the job's sketch file as if drawn now, and the job draws only the others, at the steps
that follow. Anything else in the staging folder (another config, no `job.json`, pieces of
images no longer in the job's list) is cleared and the job starts over.

Not resumed: a job whose pictures depend on every image (normalize.mode=shared, pca_rgb's
shared basis: their colour scale is fitted over all images of the job, which pieces of an
earlier launch do not hold), and single runs (a run is started again from its command).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from featvis.io import write_atomic

log = logging.getLogger(__name__)

PIECES = ".pieces"
JOB_FILE = "job.json"


def digest(config: Mapping[str, Any]) -> str:
    """A digest of a job's resolved config: two launches with the same one draw the same pictures."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Done:
    """An image an earlier launch of the job drew completely."""

    stem: str
    panels: List[str]
    labels: Optional[str] = None  # its mask's values that are not classes (featvis.data.masks)
    sketch: Dict[str, np.ndarray] = field(default_factory=dict)  # "feat/<layer>", "map/<layer>"


class Pieces:
    """The pieces of one job's staging folder: written as it draws, read when it is launched again."""

    def __init__(self, staging: Path) -> None:
        self.folder = Path(staging) / PIECES
        self._index: Dict[str, int] = {}  # stem -> its piece number (stems may hold any character)

    @classmethod
    def prepare(cls, staging: Path, sweep_id: Optional[str], config: Mapping[str, Any], allowed: bool,
                order: Sequence[str]) -> "tuple[Optional[Pieces], Dict[str, Done]]":
        """Clear `staging` unless it holds this job's own pieces; then the pieces to write (None when the
        job is not resumable) and the images already done, by stem, a prefix of `order` (the job's images)."""
        staging = Path(staging)
        if not allowed or sweep_id is None:
            shutil.rmtree(staging, ignore_errors=True)
            return None, {}
        stamp = {"sweep": sweep_id, "config": digest(config)}
        made = cls(staging)
        done = made._read(stamp, order) if staging.is_dir() else None
        if done is None:  # nothing of this job's: start over
            shutil.rmtree(staging, ignore_errors=True)
            done = {}
        made.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(made.folder / JOB_FILE, json.dumps(stamp))
        made._index = {stem: i for i, stem in enumerate(order)}
        return made, done

    def _read(self, stamp: Dict[str, str], order: Sequence[str]) -> Optional[Dict[str, Done]]:
        try:
            if json.loads((self.folder / JOB_FILE).read_text()) != stamp:
                log.info("the unfinished results in %s are another config's or sweep's: drawn again",
                         self.folder.parent)
                return None
        except (OSError, ValueError):
            return None
        done: Dict[str, Done] = {}
        for i, stem in enumerate(order):  # the images drawn in order: the first missing one ends the run
            found = self._load(i, stem)
            if found is None:
                break
            done[stem] = found
        return done

    def _load(self, i: int, stem: str) -> Optional[Done]:
        try:
            entry = json.loads((self.folder / f"{i}.json").read_text())
            if entry.get("stem") != stem:
                return None
            sketch: Dict[str, np.ndarray] = {}
            if entry.get("sketch"):
                with np.load(self.folder / f"{i}.npz", allow_pickle=False) as data:
                    sketch = {key: data[key] for key in data.files}
            return Done(stem, list(entry["panels"]), entry.get("labels"), sketch)
        except (OSError, ValueError, KeyError, TypeError):  # a piece of a killed write never gets here (renamed)
            return None

    def sketch(self, stem: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep an image's sketch arrays, before it is drawn."""
        buffer = io.BytesIO()
        np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
        write_atomic(self.folder / f"{self._index[stem]}.npz", buffer.getvalue())

    def done(self, stem: str, panels: Sequence[str], labels: Optional[str], sketched: bool) -> None:
        """An image whose pictures are all in the backends."""
        entry = {"stem": stem, "panels": list(panels), "labels": labels, "sketch": sketched}
        write_atomic(self.folder / f"{self._index[stem]}.json", json.dumps(entry))

    def remove(self) -> None:
        """Before the staging folder becomes the job's results: the pieces are no result."""
        shutil.rmtree(self.folder, ignore_errors=True)
