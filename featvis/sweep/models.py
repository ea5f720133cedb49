"""Different models of a sweep compared layer by layer: does my new architecture learn what the old one did?

A sweep over model configs on the same images (`-m model.config=a.py,b.py`, `-m model=x,y`, or a
checkpoint sweep whose jobs' configs differ) keeps a sketch per job as a checkpoint sweep does
(`compare.sketch=true`, or a sweep that varies model.checkpoint). Jobs whose overrides are the
same apart from the model (`model`, `model.*`) and the plumbing keys, and whose sketches sample
the same image points (compare.pixels, compare.seed), form a group; its baseline is chosen as a
checkpoint group's is (compare.baseline: a job name or a checkpoint; null = the first job).
Each job whose model config differs from the baseline's is compared with it layer by layer:
every one of its layers against every layer of the baseline (featvis.compare.pairs.layer_matrix:
linear CKA, plain and unbiased, over every image at the same sampled image points, so layers of
different channel counts and resolutions compare), with the best-matching baseline layer for
each of its layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from cachetools import LRUCache

from featvis.compare.pairs import UNBIASED, Matrix, layer_matrix
from featvis.compare.sketch import open_sketch
from featvis.sweep.baseline import configured_baseline, key_without, pick_baseline
from featvis.sweep.results import JobRecord

_MATRICES: "LRUCache[Tuple[Any, ...], Matrix]" = LRUCache(maxsize=10_000)  # by both jobs' file stamps


def model_key(job: JobRecord) -> str:
    """The job's overrides but its model (`model`, `model.*`) and plumbing: jobs with the same key differ
    in model (config, checkpoint, options) only."""
    return key_without(job, lambda key: key.split(".")[0] == "model")


@dataclass
class ModelPair:
    """One job's model against its group's baseline model: summary.json's model_similarity entries."""

    a: str  # the baseline job's name
    b: str  # the compared job's name
    model_a: str  # their model configs
    model_b: str
    matrix: Matrix  # rows: b's layers, columns: a's layers
    estimator: str  # compare.estimator: which CKA `best` and the heat map use
    file: Optional[str] = None  # the heat map, in the summary folder

    def shown(self) -> np.ndarray:
        return self.matrix.cka_unbiased if self.estimator == UNBIASED else self.matrix.cka

    def matches(self) -> List[Tuple[str, Optional[str], Optional[float]]]:
        """Each of b's layers, the baseline layer it is most like and that CKA (None where none is defined)."""
        out: List[Tuple[str, Optional[str], Optional[float]]] = []
        for layer, row in zip(self.matrix.rows, self.shown()):
            j = int(np.nanargmax(row)) if np.isfinite(row).any() else None
            out.append((layer, None if j is None else self.matrix.cols[j], None if j is None else float(row[j])))
        return out

    def best(self) -> Dict[str, Optional[str]]:
        """Each of b's layers -> the baseline layer it is most like (None where no CKA is defined)."""
        return {layer: match for layer, match, _ in self.matches()}

    def to_json(self) -> Dict[str, Any]:
        def cells(values: np.ndarray) -> List[List[Optional[float]]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in values.tolist()]

        return {"a": self.a, "b": self.b, "model_a": self.model_a, "model_b": self.model_b,
                "layers_a": self.matrix.cols, "layers_b": self.matrix.rows, "cka": cells(self.matrix.cka),
                "cka_unbiased": cells(self.matrix.cka_unbiased), "best": self.best(), "file": self.file}


def compare_models(sweep_dir: Path, jobs: Sequence[JobRecord], metas: Dict[Path, Dict[str, Any]],
                   paths: Dict[Path, Tuple[Path, ...]], stamps: Any, baseline: Optional[str] = None,
                   estimator: str = "linear") -> Tuple[List[ModelPair], List[str]]:
    """Every group's jobs with another model config than their baseline's, compared with it layer by layer.
    `metas` and `paths`: the jobs' sketch metas and files (featvis.sweep.checkpoints); `stamps(paths)`: a
    version of the files for the cache. Returns the pairs and one line per group that could not be compared."""
    grouped: Dict[Tuple[str, int, int], List[JobRecord]] = {}
    for job in jobs:
        meta = metas.get(job.dir)
        if meta is not None:
            grouped.setdefault((model_key(job), int(meta["pixels"]), int(meta["seed"])), []).append(job)
    pairs: List[ModelPair] = []
    errors: List[str] = []
    for members in grouped.values():
        if len({metas[j.dir].get("config") for j in members}) < 2:
            continue  # one model: the checkpoint comparison's business
        wanted = baseline if baseline is not None else configured_baseline(Path(sweep_dir), members, metas)
        try:
            base = pick_baseline(members, wanted)
        except ValueError as err:
            errors.append(f"models: {err}")
            continue
        base_meta = metas[base.dir]
        for job in members:
            meta = metas[job.dir]
            if job is base or meta.get("config") == base_meta.get("config"):
                continue
            if not set(base_meta["images"]) & set(meta["images"]):
                errors.append(f"models: {job.name} and the baseline {base.name} drew no image in common (image=auto "
                              "picks each model's own): give the sweep one image=... to compare the models")
                continue
            key = (stamps(paths[base.dir]), stamps(paths[job.dir]))
            if key not in _MATRICES:
                _MATRICES[key] = layer_matrix(open_sketch(paths[base.dir]), open_sketch(paths[job.dir]),
                                              list(base_meta["layers"]), list(meta["layers"]))
            pairs.append(ModelPair(a=base.name, b=job.name, model_a=_model(base_meta), model_b=_model(meta),
                                   matrix=_MATRICES[key], estimator=estimator))
    return pairs, errors


def _model(meta: Dict[str, Any]) -> str:
    """A job's model as captions say it: its config file's name (the model's name when two differ only in options)."""
    config = meta.get("config")
    return Path(str(config)).name if config else str(meta.get("model"))
