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

from featvis.compare.pairs import (
    LINEAR,
    MIN_CLASS_PIXELS,
    UNBIASED,
    ClassNumbers,
    Numbers,
    class_numbers,
    pair_numbers,
)
from featvis.compare.sketch import PREDICTED, SKETCH_FILE, TRUTH, ShardedSketch, Sketch, open_sketch
from featvis.engine.result import RESULTS_DIR
from featvis.sweep.baseline import column_labels, configured_baseline, group_key, pick_baseline
from featvis.sweep.embeddings import Embeddings, embed
from featvis.sweep.models import ModelPair, compare_models
from featvis.sweep.results import JobRecord, load_results

log = logging.getLogger(__name__)

UNREADABLE = (OSError, ValueError, KeyError, zipfile.BadZipFile)  # what a damaged or half-written sketch raises

Stat = Tuple[str, int, int]  # (path, mtime_ns, size): one version of a sketch file
AnySketch = Union[Sketch, ShardedSketch]
BY = {TRUTH: "ground_truth", PREDICTED: "prediction"}  # per-class numbers by the ground truth, else the prediction
# (baseline file, job file, layer) -> its numbers and its per-class numbers, for the summaries of one sweep
_PAIRS: "LRUCache[Tuple[Tuple[Stat, ...], Tuple[Stat, ...], str], Tuple[Numbers, Dict[int, ClassNumbers], str]]" = \
    LRUCache(maxsize=100_000)


@dataclass
class Similarity:
    """One layer of one job against its group's baseline job: summary.json's checkpoint_similarity entries."""

    a: str  # the baseline job's name
    b: str  # the compared job's name
    layer: str
    cka: Optional[float]  # None: a side is constant (nothing to compare)
    change: Optional[float]  # sum |b - a| / sum |a|; None when the baseline's features are all 0
    cka_unbiased: Optional[float] = None  # minibatch CKA from the unbiased HSIC (featvis.compare.cka)

    def to_json(self) -> Dict[str, Any]:
        return {"a": self.a, "b": self.b, "layer": self.layer, "cka": self.cka, "change": self.change,
                "cka_unbiased": self.cka_unbiased}

    def shown(self, estimator: str) -> Optional[float]:
        """The CKA the summary shows for `compare.estimator`."""
        return self.cka_unbiased if estimator == UNBIASED else self.cka


@dataclass
class ClassSimilarity:
    """One layer of one job against the baseline over the sampled pixels of one class (the images' ground
    truth, else the baseline's prediction): summary.json's class_similarity entries. Below MIN_CLASS_PIXELS
    pixels: no numbers, `note` says so."""

    a: str
    b: str
    layer: str
    class_id: int
    name: str  # the class's name in the baseline model's dataset_meta (its id when unnamed)
    pixels: int  # sampled pixels of the class over every image
    cka: Optional[float] = None  # always None: per class, only the unbiased estimator (see class_numbers)
    change: Optional[float] = None
    cka_unbiased: Optional[float] = None
    note: Optional[str] = None
    by: str = "ground_truth"  # whose classes: the images' ground truth, else the baseline's "prediction"

    def to_json(self) -> Dict[str, Any]:
        return {"a": self.a, "b": self.b, "layer": self.layer, "class": self.name, "class_id": self.class_id,
                "pixels": self.pixels, "cka": self.cka, "change": self.change, "cka_unbiased": self.cka_unbiased,
                "note": self.note, "by": self.by}

    def shown(self, estimator: str) -> Optional[float]:
        """Per class always the unbiased CKA (featvis.compare.pairs.class_numbers says why)."""
        return self.cka_unbiased


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
    classes: List[ClassSimilarity] = field(default_factory=list)  # per ground-truth class, when there is one
    models: List[ModelPair] = field(default_factory=list)  # jobs of other model configs against a baseline model
    embeddings: Optional[Embeddings] = None  # sampled pixels by class, per job and layer
    estimator: str = LINEAR  # the CKA shown (compare.estimator as the first sketched job composed it)
    errors: List[str] = field(default_factory=list)  # one line each: a baseline matching no job, a bad file
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.groups or self.errors or self.models or self.embeddings)

    def ranking(self) -> List[LayerRank]:
        """Every group's layers, largest change first (then lowest CKA); layers without numbers last."""
        rows: Dict[Tuple[str, str], LayerRank] = {}
        for s in self.similarities:
            row = rows.setdefault((s.a, s.layer), LayerRank(a=s.a, layer=s.layer, cka={}, change={}))
            row.cka[s.b], row.change[s.b] = s.shown(self.estimator), s.change

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

    def class_table(self, group: "Group", job: str) -> Tuple[List[str], List[str]]:
        """(layers in network order, classes by id) of one compared job's per-class rows against its baseline."""
        mine = [c for c in self.classes if c.a == group.baseline.name and c.b == job]
        names = list(dict.fromkeys(c.name for c in sorted(mine, key=lambda c: c.class_id)))
        return [layer for layer in group.layers if any(c.layer == layer for c in mine)], names

    def cka_label(self) -> str:
        return "unbiased CKA" if self.estimator == UNBIASED else "linear CKA"

    def cka_matrix(self) -> Tuple[List[str], List[str], np.ndarray]:
        """(rows, columns, CKA values): a row per layer of each group in network order, NaN where none."""
        cols = self.columns()
        found = {(s.a, s.b, s.layer): s.shown(self.estimator) for s in self.similarities}
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
                "class_similarity": [c.to_json() for c in self.classes],
                "checkpoint_estimator": self.estimator,
                "model_similarity": [m.to_json() for m in self.models],
                **(self.embeddings.to_json() if self.embeddings else {"class_separability": [], "embeddings": {}}),
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
    if not candidates:
        return result
    metas: Dict[Path, Dict[str, Any]] = {}  # by job dir: two jobs may share a name
    for job in candidates:
        try:
            metas[job.dir] = _meta(sketch_paths(job))
        except UNREADABLE as err:
            result.errors.append(f"{job.name}: its sketch cannot be read ({err}); left out of the comparison")
    sketched = [j for j in candidates if j.dir in metas]
    files = {j.dir: sketch_paths(j) for j in sketched}
    try:  # where the classes separate: every sketched job, even alone
        result.embeddings = embed(sketched, metas, files, file_stamps)
    except UNREADABLE as err:
        result.errors.append(f"no class embeddings: a sketch cannot be read ({err})")
    if len(candidates) < 2:
        return result
    if metas:  # compare.estimator as the jobs composed it (the first job's)
        result.estimator = str(next(iter(metas.values())).get("estimator") or LINEAR)
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
            similarities, classes = _compare_group(group, list(meta.get("classes") or []))
            result.similarities += similarities
            result.classes += classes
        except UNREADABLE as err:
            result.errors.append(f"{base.name} and the jobs compared with it: a sketch cannot be read ({err})")
            continue
        result.groups.append(group)
    try:
        result.models, errors = compare_models(Path(sweep_dir), sketched, metas, files, file_stamps, baseline,
                                               result.estimator)
        result.errors += errors
    except UNREADABLE as err:
        result.errors.append(f"models not compared: a sketch cannot be read ({err})")
    result.seconds = time.perf_counter() - start
    return result


def _compare_group(group: Group, names: List[str]) -> Tuple[List[Similarity], List[ClassSimilarity]]:
    base_path = group.sketches[group.baseline.dir]
    base: Optional[AnySketch] = None
    out: List[Similarity] = []
    per_class: List[ClassSimilarity] = []
    for job in group.jobs:
        path = group.sketches[job.dir]
        stamps = (file_stamps(base_path), file_stamps(path))  # once per job, not per layer
        keys = {layer: (*stamps, layer) for layer in group.layers}
        other: Optional[AnySketch] = None
        kind = TRUTH  # the classes compared by: the ground truth's when either sketch has it (found once per job)
        for layer in group.layers:
            if keys[layer] not in _PAIRS:
                if base is None:
                    base = open_sketch(base_path)
                if other is None:
                    other = open_sketch(path)
                    kind = TRUTH if _has_truth(base) or _has_truth(other) else PREDICTED
                if layer not in other.layers:
                    continue
                _PAIRS[keys[layer]] = (pair_numbers(base, other, layer), class_numbers(base, other, layer, kind), kind)
            numbers, classes, kind = _PAIRS[keys[layer]]
            out.append(Similarity(a=group.baseline.name, b=job.name, layer=layer, cka=numbers.cka,
                                  change=numbers.change, cka_unbiased=numbers.cka_unbiased))
            for class_id, found in classes.items():
                name = names[class_id] if 0 <= class_id < len(names) else str(class_id)
                row = ClassSimilarity(a=group.baseline.name, b=job.name, layer=layer, class_id=class_id, name=name,
                                      pixels=found.pixels, by=BY[kind])
                if found.numbers is None:
                    row.note = f"too few pixels ({found.pixels} sampled, {MIN_CLASS_PIXELS} needed)"
                else:
                    row.cka, row.change, row.cka_unbiased = found.numbers
                per_class.append(row)
    return out, per_class


def _has_truth(sketch: AnySketch) -> bool:
    return any(sketch.classes(stem) is not None for stem in sketch.images)


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
