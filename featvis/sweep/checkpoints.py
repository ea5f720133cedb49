"""Checkpoints of a sweep compared layer by layer with a baseline: linear CKA and relative change.

`compare_checkpoints(sweep_dir, jobs)` reads the sketch (featvis.compare.sketch) of every
ok job that left one, `<job>/featvis/sketch.npz`, and

- groups the jobs that compare: the same overrides apart from `model.checkpoint` (and the
  plumbing keys featvis.config.job.PLUMBING: backends, wandb, ...) and the same sampled
  pixels (compare.pixels, compare.seed). A sweep `-m model.checkpoint=a,b layers=x,y` has
  a group per layer preset, each comparing a with b;
- picks each group's baseline from `compare.baseline` as the jobs composed it: the sketch's
  meta `baseline` when the job wrote one, else the job's `.hydra/config.yaml`, else the
  sweep's `multirun.yaml`. It names a job (its name), a checkpoint as given on the command
  line, or a checkpoint's file name; null = the job with the lowest number;
- for each other job and each layer both sketches hold: linear CKA over every shared image
  and sampled pixel (the pixels are the examples, paired by position; `Accumulator` fed
  image by image), and change = sum |b - a| / sum |a| over the same sampled features, the
  relative mean absolute difference (0 = the same features, 1 = as large as the baseline's);
- ranks the layers by change, largest first (the largest over the group's checkpoints).

Results are plain records (`Similarity`, `LayerRank`). Each pair's numbers are kept for
the process, keyed by both files' size and time, so the summary rewritten after every job
only computes the new job's: the cost of a sweep is one comparison per (job, layer, image).
"""

from __future__ import annotations

import json
import logging
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from cachetools import LRUCache

from featvis.compare.pairs import Numbers, pair_numbers
from featvis.compare.sketch import SKETCH_FILE, ShardedSketch, Sketch, open_sketch
from featvis.engine.result import RESULTS_DIR
from featvis.sweep.baseline import column_labels, configured_baseline, group_key, pick_baseline
from featvis.sweep.results import JobRecord, load_results

log = logging.getLogger(__name__)

UNREADABLE = (OSError, ValueError, KeyError, zipfile.BadZipFile)  # what a damaged or half-written sketch raises

Stat = Tuple[str, int, int]  # (path, mtime_ns, size): one version of a sketch file
AnySketch = Union[Sketch, ShardedSketch]
# (baseline file, job file, layer) -> (cka, change), for the summaries of one sweep in this process
_PAIRS: "LRUCache[Tuple[Tuple[Stat, ...], Tuple[Stat, ...], str], Tuple[Optional[float], Optional[float]]]" = \
    LRUCache(maxsize=100_000)


@dataclass
class Similarity:
    """One layer of one job against its group's baseline job: summary.json's checkpoint_similarity entries."""

    a: str  # the baseline job's name
    b: str  # the compared job's name
    layer: str
    cka: Optional[float]  # None: a side is constant (nothing to compare)
    change: Optional[float]  # sum |b - a| / sum |a|; None when the baseline's features are all 0

    def to_json(self) -> Dict[str, Any]:
        return {"a": self.a, "b": self.b, "layer": self.layer, "cka": self.cka, "change": self.change}


@dataclass
class LayerRank:
    """A layer of a group, with its numbers for every compared job: one row of the ranking."""

    a: str  # the baseline job's name
    layer: str
    cka: Dict[str, Optional[float]]  # compared job's name -> CKA
    change: Dict[str, Optional[float]]  # compared job's name -> change

    @property
    def max_change(self) -> Optional[float]:
        values = [v for v in self.change.values() if v is not None]
        return max(values) if values else None

    @property
    def min_cka(self) -> Optional[float]:
        values = [v for v in self.cka.values() if v is not None]
        return min(values) if values else None

    def to_json(self) -> Dict[str, Any]:
        return {"a": self.a, "layer": self.layer, "change": self.max_change, "cka": self.min_cka,
                "by_job": {b: {"cka": self.cka[b], "change": self.change[b]} for b in self.cka}}


@dataclass
class Group:
    """Jobs that differ in their checkpoint only, compared with one of them, the baseline."""

    key: str  # the overrides the jobs share, for captions when a sweep has several groups
    baseline: JobRecord
    jobs: List[JobRecord]  # the compared jobs, in job order (without the baseline)
    sketches: Dict[Path, Tuple[Path, ...]]  # job dir -> its sketch file, or its shards' (baseline included)
    layers: List[str]  # layers of the baseline's sketch, in its order
    images: List[str]  # images of the baseline's sketch, in its order
    labels: Dict[str, str] = field(default_factory=dict)  # job name -> column caption: its checkpoint file


@dataclass
class Comparison:
    """Everything the summary shows of the checkpoints: groups, numbers, ranking, and what went wrong."""

    groups: List[Group] = field(default_factory=list)
    similarities: List[Similarity] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)  # one line each: a baseline matching no job, a bad file
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.groups or self.errors)

    def ranking(self) -> List[LayerRank]:
        """Every group's layers, largest change first (then lowest CKA); layers without numbers last."""
        rows: Dict[Tuple[str, str], LayerRank] = {}
        for s in self.similarities:
            row = rows.setdefault((s.a, s.layer), LayerRank(a=s.a, layer=s.layer, cka={}, change={}))
            row.cka[s.b], row.change[s.b] = s.cka, s.change

        def order(r: LayerRank) -> Tuple[int, float, float]:
            change, cka = r.max_change, r.min_cka
            return (change is None, -(change or 0.0), 1.0 if cka is None else cka)

        return sorted(rows.values(), key=order)

    def columns(self) -> List[str]:
        """The compared checkpoints' captions over every group, in job order (columns of tables and sheets)."""
        cols: List[str] = []
        for group in self.groups:
            cols += [group.labels[j.name] for j in group.jobs if group.labels[j.name] not in cols]
        return cols

    def baselines(self) -> str:
        """The groups' baselines as captions say them: their checkpoint files, in group order."""
        return ", ".join(dict.fromkeys(g.labels[g.baseline.name] for g in self.groups))

    def row_label(self, group: Group, layer: str) -> str:
        """A layer's row caption: its name, with its group's overrides when the sweep has several groups."""
        return layer if len(self.groups) == 1 or not group.key else f"{layer} [{group.key}]"

    def cka_matrix(self) -> Tuple[List[str], List[str], np.ndarray]:
        """(rows, columns, CKA values): a row per layer of each group in network order, NaN where none."""
        cols = self.columns()
        found = {(s.a, s.b, s.layer): s.cka for s in self.similarities}
        rows: List[str] = []
        values: List[List[float]] = []
        for group in self.groups:
            by_col = {group.labels[j.name]: j.name for j in group.jobs}
            for layer in group.layers:
                cells = [found.get((group.baseline.name, by_col.get(c, ""), layer)) for c in cols]
                if any(v is not None for v in cells):
                    rows.append(self.row_label(group, layer))
                    values.append([math.nan if v is None else v for v in cells])
        return rows, cols, np.array(values, np.float64).reshape(len(rows), len(cols))

    def to_json(self) -> Dict[str, Any]:
        """summary.json's `checkpoint_similarity`, `checkpoint_ranking` and `checkpoint_errors`."""
        return {"checkpoint_similarity": [s.to_json() for s in self.similarities],
                "checkpoint_ranking": [r.to_json() for r in self.ranking()],
                "checkpoint_baselines": {g.baseline.name: [j.name for j in g.jobs] for g in self.groups},
                "checkpoint_errors": list(self.errors)}


def sketch_path(job: JobRecord) -> Path:
    return job.dir / RESULTS_DIR / SKETCH_FILE


def sketch_paths(job: JobRecord) -> Tuple[Path, ...]:
    """The job's sketch file, or its shards' (featvis.sweep.shards), in shard order."""
    return tuple(folder / RESULTS_DIR / SKETCH_FILE for folder in job.folders)


def with_sketches(jobs: Sequence[JobRecord]) -> List[JobRecord]:
    """The ok jobs that left a sketch file (one stat per job: a sweep without sketches costs nothing more)."""
    return [j for j in jobs if j.status == "ok" and all(p.is_file() for p in sketch_paths(j))]


def compare_checkpoints(sweep_dir: Path, jobs: Sequence[JobRecord], baseline: Optional[str] = None) -> Comparison:
    """The comparison of every group of jobs with sketches; `baseline` overrides the jobs' compare.baseline."""
    start = time.perf_counter()
    result = Comparison()
    candidates = with_sketches(jobs)
    if len(candidates) < 2:
        return result
    metas: Dict[Path, Dict[str, Any]] = {}  # by job dir: two jobs may share a name
    for job in candidates:
        try:
            metas[job.dir] = _meta(sketch_paths(job))
        except UNREADABLE as err:
            result.errors.append(f"{job.name}: its sketch cannot be read ({err}); left out of the comparison")
    grouped: Dict[Tuple[str, int, int], List[JobRecord]] = {}
    for job in candidates:
        if job.dir in metas:
            meta = metas[job.dir]
            grouped.setdefault((group_key(job), int(meta["pixels"]), int(meta["seed"])), []).append(job)
    for (key, _, _), members in grouped.items():
        if len(members) < 2:
            continue
        wanted = baseline if baseline is not None else configured_baseline(Path(sweep_dir), members, metas)
        try:
            base = pick_baseline(members, wanted)
        except ValueError as err:
            result.errors.append(str(err))
            continue
        others = [j for j in members if j is not base]
        meta = metas[base.dir]
        group = Group(key=key, baseline=base, jobs=others, sketches={j.dir: sketch_paths(j) for j in members},
                      layers=list(meta["layers"]), images=list(meta["images"]), labels=column_labels(members))
        try:
            result.similarities += _compare_group(group)
        except UNREADABLE as err:
            result.errors.append(f"{base.name} and the jobs compared with it: a sketch cannot be read ({err})")
            continue
        result.groups.append(group)
    result.seconds = time.perf_counter() - start
    return result


def _compare_group(group: Group) -> List[Similarity]:
    base_path = group.sketches[group.baseline.dir]
    base: Optional[AnySketch] = None
    out: List[Similarity] = []
    for job in group.jobs:
        path = group.sketches[job.dir]
        stamps = (file_stamps(base_path), file_stamps(path))  # once per job, not per layer
        keys = {layer: (*stamps, layer) for layer in group.layers}
        other: Optional[AnySketch] = None
        for layer in group.layers:
            if keys[layer] not in _PAIRS:
                if base is None:
                    base = open_sketch(base_path)
                if other is None:
                    other = open_sketch(path)
                if layer not in other.layers:
                    continue
                _PAIRS[keys[layer]] = pair_numbers(base, other, layer)
            cka, change = _PAIRS[keys[layer]]
            out.append(Similarity(a=group.baseline.name, b=job.name, layer=layer, cka=cka, change=change))
    return out


def file_stamps(paths: Sequence[Path]) -> Tuple[Stat, ...]:
    """(path, mtime_ns, size) of each file: one version of a job's sketch files, for the caches."""
    found = []
    for path in paths:
        st = path.stat()
        found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(found)


def _meta(paths: Sequence[Path]) -> Dict[str, Any]:
    """A sketch's meta only (np.load reads an npz entry when it is asked for); a sharded job's: its
    parts' images in shard order, the first part's layers and positions."""
    metas = []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        for key in ("layers", "images", "pixels", "seed"):
            if key not in meta:
                raise KeyError(key)
        metas.append(meta)
    return {**metas[0], "images": [stem for meta in metas for stem in meta["images"]]}


def against_baseline(sweep_dir: Path, me: JobRecord, own: Path,
                     wanted: Optional[str]) -> Optional[Tuple[JobRecord, Dict[str, Numbers]]]:
    """For a job still running: its layers' (CKA, change) against its group's baseline, when the
    baseline is another job of the sweep that has finished with a sketch (it ran first); else None.

    The job's own numbers for its W&B run; the sweep summary computes the same for every job.
    """
    finished = [j for j in with_sketches(load_results(sweep_dir))
                if j.dir != me.dir and group_key(j) == group_key(me)]
    if not finished:
        return None
    try:
        baseline = pick_baseline([*finished, me], wanted)
    except ValueError:  # names a job that has not run yet, or none: the summary says so
        return None
    if baseline is me:
        return None
    base, mine = Sketch(sketch_path(baseline)), Sketch(own)  # this job and the baseline's shard alike: one file each
    if (base.meta.get("pixels"), base.meta.get("seed")) != (mine.meta.get("pixels"), mine.meta.get("seed")):
        return None
    return baseline, {layer: pair_numbers(base, mine, layer) for layer in mine.layers if layer in base.layers}
