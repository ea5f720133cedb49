"""One featvis job: images -> model -> recorded layers -> pictures -> backends.

The order matters for failing well: everything that can be checked (config values,
images and masks, layers, checkpoint) is checked before any output is written, and
outputs go to `<output_dir>/featvis.partial/`, renamed to `<output_dir>/featvis/`
only when the job completes. A failed job never leaves results that look complete.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Set, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from featvis import inputs, rendering
from featvis.backends.run_info import RunInfo
from featvis.config_schema import validate
from featvis.job import JobInfo
from featvis.layer_selection import select_layers
from featvis.model_loader import LoadedModel, load_model
from featvis.recorder import FeatureRecorder
from featvis.reductions import Reduced, reduce
from featvis.visualizer import FeatureVisualizer

log = logging.getLogger(__name__)

RESULTS = "featvis"  # the folder a finished job leaves in its output dir


@dataclass
class JobResult:
    output_dir: Path  # <job output>/featvis
    images: List[str] = field(default_factory=list)  # stems, in logging order
    panels: Dict[str, List[str]] = field(default_factory=dict)  # stem -> panel names


def run(cfg: DictConfig, job: JobInfo) -> JobResult:
    validate(cfg)
    samples = inputs.collect(cfg.image, cfg.gt_mask)
    if cfg.gt_mask and not any(s.mask_path for s in samples):
        log.info("gt_mask=%s matched none of the images by file stem: no ground truth shown", cfg.gt_mask)

    final = job.output_dir / RESULTS
    staging = job.output_dir / (RESULTS + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier failed job in this folder
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_info = RunInfo(name=job.name, job_type=job.job_type, group=cfg.wandb.group or job.group, config=resolved)
    visualizer = FeatureVisualizer(OmegaConf.to_container(cfg.backends), staging, run_info)

    loaded = load_model(cfg.model.config, cfg.model.checkpoint, cfg.device)
    layers = select_layers(loaded.model, list(cfg.layers.names))
    log.info("model %s on %s; layers: %s", cfg.model.name, loaded.device, ", ".join(l.name for l in layers))
    reduce_fn = partial(reduce, cfg.reduction.name, topk=cfg.reduction.topk)

    result = JobResult(output_dir=final)
    warned: Set[Tuple[str, str]] = set()  # (layer, problem) pairs already logged
    watch = getattr(loaded.model, "backbone", None)  # its input's aspect ratio shapes token maps
    with visualizer, FeatureRecorder(layers, reduce_fn, watch, root=loaded.model) as recorder:
        visualizer.start()  # every input is checked by now: open W&B while the model runs
        visualizer.add_config(resolved)
        for step, item in enumerate(inputs.iter_loaded(samples)):
            panels = _process(cfg, loaded, recorder, item, warned)
            for name, (image, caption) in panels.items():
                visualizer.add_image(name, image, step=step, image_id=item.sample.stem, caption=caption)
            result.images.append(item.sample.stem)
            result.panels[item.sample.stem] = list(panels)
            log.info("[%d/%d] %s: %d pictures", step + 1, len(samples), item.sample.stem, len(panels))
    shutil.rmtree(final, ignore_errors=True)  # an earlier complete job in this folder: replaced
    staging.rename(final)
    log.info("results in %s", final)
    for offline in sorted((final / "wandb").glob("offline-run-*")):
        log.info("upload the offline W&B run with: wandb sync %s", offline)
    return result


def _process(cfg: DictConfig, loaded: LoadedModel, recorder: FeatureRecorder,
             item: inputs.Loaded, warned: Set[Tuple[str, str]]) -> Dict[str, tuple]:
    """Run the model on one image and draw its panels: {name: (RGB picture, caption)}."""
    from mmseg.apis import inference_model

    sample = inference_model(loaded.model, item.image_bgr)
    maps = recorder.pop()
    palette = loaded.dataset_meta["palette"]
    stem, image = item.sample.stem, item.image_rgb
    panels: Dict[str, tuple] = {"input": (image, stem)}
    if item.gt is not None:
        panels["ground_truth"] = (rendering.overlay_labels(item.gt, image, palette, 0.5), f"{stem} ground truth")
    pred = sample.pred_sem_seg.data[0].cpu().numpy()
    panels["prediction"] = (rendering.overlay_labels(pred, image, palette, 0.5), f"{stem} prediction")
    for layer, per_item in maps.items():
        reduced: Reduced = per_item[0]  # one image per forward
        labels = [f"ch {c}" for c in reduced.channels] if reduced.channels and len(reduced.channels) > 1 else None
        picture = rendering.overlay_maps(reduced.maps, image, sample.metainfo, cfg.alpha,
                                         cfg.reduction.arrangement, labels)
        panels[f"featmap/{layer}"] = (picture, _caption(stem, layer, cfg.reduction.name, reduced, warned))
    return panels


def _caption(stem: str, layer: str, reduction: str, reduced: Reduced, warned: Set[Tuple[str, str]]) -> str:
    """`image | layer | reduction ch N`, plus what is wrong with the values, warned once per layer."""
    channels = f" ch {reduced.channels[0]}" if reduced.channels and len(reduced.channels) == 1 else ""
    notes = []
    values = reduced.maps.numpy()
    if not np.isfinite(values).all():
        notes.append("NaN/Inf present, drawn as the minimum")
    if any(rendering.is_constant(m) for m in values):
        notes.append("constant map, not coloured")
    for note in notes:
        if (layer, note) not in warned:
            warned.add((layer, note))
            log.warning("%s (first seen on %s): %s", layer, stem, note)
    return " | ".join([stem, layer, f"{reduction}{channels}", *notes])
