"""What one job keeps for comparing by numbers (featvis.compare): its sketch and its layers' CKA matrix.

A job sketches when `compare.sketch` is true, or null and its sweep varies the model
(model.checkpoint, model.config or the model group: `JobInfo.swept`), or
`compare.layer_similarity` is true. Then the recorder samples every map's full features at
the shared positions (`points`, given to FeatureRecorder as `sketch_points`), `add` takes
each image's sketches from its recorded maps on their way to the drawer, streaming them into
`<staging>/sketch.npz` (featvis.compare.sketch), and `finish` closes that file before the
staging folder becomes the job's `featvis/` folder: a job that fails leaves no sketch among
its results. Images are named as their pictures are
(`sample.stem`, unique in the job), layers by their sub-names (`backbone[2]`).

With `compare.layer_similarity`, `finish` also writes the CKA matrix of the job's layers over
all its images, `featvis/layer_similarity.csv` and `.png`, and logs the picture to every
backend as panel `similarity/layers` of the pseudo image `layer_similarity`, at the last
image's step (W&B keeps one history row per image).

In a sweep whose baseline job (compare.baseline, else the first) finished before this one,
`finish` also compares this job's sketch with the baseline's (featvis.sweep.checkpoints
`against_baseline`, the summary's own arithmetic) and logs `cka/<layer>` and
`change/<layer>` as scalars of this job's run.

A job that sketches nothing pays nothing: no points, no sampling, no file. Grad-CAM runs the
model itself, without the recorder: it keeps no sketch (one info line says so).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from hydra.core.hydra_config import HydraConfig

from featvis.backends.encoding import write_png
from featvis.backends.visualizer import FeatureVisualizer
from featvis.compare.layers import LayerSimilarity, write_csv
from featvis.compare.sketch import PREDICTED, TRUTH, SketchWriter, positions
from featvis.config.job import JobInfo
from featvis.data.masks import IGNORE_INDEX
from featvis.pipeline.resume import Done, Pieces
from featvis.record.recorded import Recorded
from featvis.record.sampling import classes_at
from featvis.reduce.base import Reduction
from featvis.render.align import crop_valid
from featvis.render.panel import Panel
from featvis.render.similarity import similarity_picture
from featvis.sweep.checkpoints import against_baseline
from featvis.sweep.results import JobRecord

log = logging.getLogger(__name__)

SIMILARITY_CSV = "layer_similarity.csv"
SIMILARITY_PNG = "layer_similarity.png"
SIMILARITY_PANEL = "similarity/layers"
SIMILARITY_IMAGE = "layer_similarity"  # the pseudo image the panel belongs to in the backends


def job_number() -> Optional[int]:
    """Hydra's number of the running job (the sweep's order); None outside a Hydra multirun job."""
    try:
        return int(HydraConfig.get().job.num)
    except Exception:  # no Hydra runtime (the compose API, tests), or a run without a number
        return None


def wanted(compare: Any, swept: Any) -> bool:
    """Whether a job with these `compare` settings, in a sweep varying `swept`, keeps a sketch."""
    varies_model = any(key in swept for key in ("model.checkpoint", "model.config", "model"))
    return bool(compare.sketch) or (compare.sketch is None and varies_model) or bool(compare.layer_similarity)


class JobSketches:
    """One job's sketches: `points` for the recorder, `add` per image, `finish` before the results move."""

    def __init__(self, staging: Path, writer: Optional[SketchWriter] = None,
                 similarity: Optional[LayerSimilarity] = None) -> None:
        self.staging = Path(staging)
        self.writer = writer
        self.similarity = similarity
        self.points: Optional[np.ndarray] = positions(writer.pixels, writer.seed) if writer else None
        self.job: Optional[JobInfo] = None  # in a sweep: the job's CKA against a baseline that ran first
        self.baseline: Optional[str] = None  # compare.baseline
        self.num: Optional[int] = None  # Hydra's job number
        self.pieces: Optional[Pieces] = None  # a sweep job: each image's sketch kept for a later launch (resume)

    @classmethod
    def for_job(cls, cfg: Any, job: JobInfo, reduction: Reduction, staging: Path,
                classes: Sequence[str] = (), palette: Sequence[Sequence[int]] = ()) -> "JobSketches":
        compare = cfg.compare
        if not wanted(compare, job.swept):
            return cls(staging)
        if reduction.uses_gradients:
            log.info("reduction=%s runs the model itself, without the recorder: no sketch for compare.* "
                     "(no checkpoint comparison or layer similarity for this job)", reduction.name)
            return cls(staging)
        meta = {"job": job.name, "model": cfg.model.name, "config": cfg.model.config,
                "checkpoint": cfg.model.checkpoint, "reduction": cfg.reduction.name,
                "baseline": compare.baseline,  # the sweep summary picks the baseline from here first
                "estimator": str(getattr(compare.estimator, "value", compare.estimator)),
                "embedding": str(getattr(compare.embedding, "value", compare.embedding)),
                "classes": list(classes),  # names of the ground truth's classes (per-class similarity)
                "palette": [list(map(int, c)) for c in palette]}  # their colours (class embeddings)
        writer = SketchWriter(compare.pixels, compare.seed, meta=meta, stream=Path(staging))
        made = cls(staging, writer, LayerSimilarity() if compare.layer_similarity else None)
        made.job, made.baseline, made.num = job, compare.baseline, job_number()
        return made

    def _log_against_baseline(self, path: Path, visualizer: FeatureVisualizer, step: int) -> None:
        """In a sweep whose baseline job ran first: this job's per-layer CKA and change against it, as
        scalars `cka/<layer>`, `change/<layer>` of its own run (the summary has every job's)."""
        if self.job is None or self.job.sweep_dir is None:
            return
        me = JobRecord(dir=Path(self.job.output_dir), name=self.job.name, status="ok", num=self.num,
                       overrides=list(self.job.overrides))
        try:
            found = against_baseline(Path(self.job.sweep_dir), me, path, self.baseline)
        except Exception as err:  # a damaged earlier sketch: the summary reports it; the job goes on
            log.warning("no CKA against the baseline for this job's run: %s", err)
            return
        if found is None:
            return
        baseline, numbers = found
        scalars = {f"{kind}/{layer}": value for layer, pair in numbers.items()
                   for kind, value in zip(("cka", "change", "cka_unbiased"), pair) if value is not None}
        if scalars:
            visualizer.add_scalars(scalars, step=step)
            log.info("CKA against the baseline %s: %s", baseline.name,
                     ", ".join(f"{layer} {pair[0]:.4f}" for layer, pair in numbers.items() if pair[0] is not None))

    def add(self, recorded: Recorded) -> Recorded:
        """Keep this image's sketches (every map that has one); returns `recorded`, for the drawer."""
        if self.writer is None:
            return recorded
        stem = recorded.item.sample.stem
        features: Dict[str, np.ndarray] = {}
        arrays: Dict[str, np.ndarray] = {}  # the image's piece (resume)
        for layer, per_item in recorded.maps.items():
            reduced = per_item[0] if per_item else None
            if reduced is None or reduced.sketch is None:
                continue
            # the part that covers the image: a padded input's padding is no data to compare
            first = crop_valid(reduced.maps[0], recorded.sample.metainfo) if reduced.maps.shape[0] else None
            self.writer.add(stem, layer, reduced.sketch, first)
            features[layer] = reduced.sketch
            arrays[f"feat/{layer}"] = reduced.sketch
            if first is not None:
                arrays[f"map/{layer}"] = first
        if self.similarity is not None and features:
            self.similarity.add(features)
        pred = getattr(recorded.sample, "pred_sem_seg", None)
        labels = {TRUTH: recorded.item.gt, PREDICTED: None if pred is None else pred.data[0].cpu().numpy()}
        for kind, label_map in labels.items():  # the class under each sampled pixel: ground truth, prediction
            if label_map is not None and features and self.points is not None:
                arrays[kind] = classes_at(label_map, self.points, recorded.sample.metainfo, IGNORE_INDEX)
                self.writer.add_classes(stem, arrays[kind], kind)
        if self.pieces is not None:
            self.pieces.sketch(stem, arrays)
        return recorded

    def restore(self, done: Done) -> None:
        """An image an earlier launch of the job drew (featvis.pipeline.resume): its sketch as if drawn now."""
        if self.writer is None:
            return
        features: Dict[str, np.ndarray] = {}
        for key, array in done.sketch.items():
            if key.startswith("feat/"):
                features[key[len("feat/"):]] = array
        for layer, array in features.items():
            self.writer.add(done.stem, layer, array, done.sketch.get(f"map/{layer}"))
        for kind in (TRUTH, PREDICTED):
            if kind in done.sketch:
                self.writer.add_classes(done.stem, done.sketch[kind], kind)
        if self.similarity is not None and features:
            self.similarity.add(features)

    def finish(self, visualizer: FeatureVisualizer, step: int) -> None:
        """Close the sketch file in the staging folder; with layer_similarity, write and log the matrix."""
        if self.writer is None:
            return
        path = self.writer.write(self.staging)
        if path is not None:
            log.info("sketch of %d images x %d layers for compare: %s (%.1f MB)", len(self.writer.images),
                     len(self.writer.layers), path.name, path.stat().st_size / 1e6)
            self._log_against_baseline(path, visualizer, step)
        if self.similarity is None or not self.similarity.layers:
            return
        layers, matrix = self.similarity.layers, self.similarity.matrix()
        write_csv(self.staging / SIMILARITY_CSV, layers, matrix)
        n = len(self.writer.images)
        picture = similarity_picture(matrix, layers, f"layer similarity (linear CKA), {n} image{'s' * (n != 1)}")
        write_png(self.staging / SIMILARITY_PNG, picture)
        caption = f"linear CKA of the job's {len(layers)} layers over {n} images"
        visualizer.add_panels([Panel(SIMILARITY_PANEL, picture, caption)], step=step, image_id=SIMILARITY_IMAGE)
        log.info("layer similarity of %d layers: %s, %s", len(layers), SIMILARITY_CSV, SIMILARITY_PNG)
