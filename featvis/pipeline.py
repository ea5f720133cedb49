"""One featvis job: images -> model -> recorded layers -> pictures -> backends.

The order matters for failing well: everything that can be checked (config values,
images and masks, layers, checkpoint) is checked before any output is written, and
outputs go to `<output_dir>/featvis.partial/`, renamed to `<output_dir>/featvis/`
only when the job completes. A failed job never leaves results that look complete.
"""

from __future__ import annotations

import logging
import queue
import shutil
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from featvis import inputs, rendering
from featvis.backends.png import LazyPNG, encode_all
from featvis.backends.run_info import RunInfo
from featvis.config_schema import validate
from featvis.errors import SkippedImagesError
from featvis.job import JobInfo
from featvis.layer_selection import select_layers
from featvis import model_cache
from featvis.model_loader import LoadedModel
from featvis.recorder import FeatureRecorder, flatten
from featvis import shared_forward
from featvis import gradcam
from featvis.reductions import (GRADIENT_REDUCTIONS, PcaBases, Reduced, class_map_options, reduce,
                                resolve_class)
from featvis.visualizer import FeatureVisualizer

log = logging.getLogger(__name__)

RESULTS = "featvis"  # the folder a finished job leaves in its output dir


@dataclass
class JobResult:
    output_dir: Path  # <job output>/featvis
    images: List[str] = field(default_factory=list)  # stems, in logging order
    panels: Dict[str, List[str]] = field(default_factory=dict)  # stem -> panel names
    forwards: int = 0  # images the model ran on in this job
    reused: int = 0  # images whose maps an earlier job of the sweep recorded (share_forward)


def run(cfg: DictConfig, job: JobInfo) -> JobResult:
    validate(cfg)
    collected = inputs.collect_any(cfg.image, cfg.gt_mask, cfg.model.config, cfg.data_root)
    samples = inputs.choose(collected.usable(), cfg.max_images, cfg.sample, cfg.seed)
    problems = list(collected.problems)  # images set aside; more may join while decoding
    for problem in problems:
        log.warning("skipping %s: %s", problem.path, problem.message)
    if cfg.gt_mask and not any(s.mask_path for s in samples):
        log.info("gt_mask=%s matched none of the images by file stem: no ground truth shown", cfg.gt_mask)

    final = job.output_dir / RESULTS
    staging = job.output_dir / (RESULTS + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier failed job in this folder
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_info = RunInfo(name=job.name, job_type=job.job_type, group=cfg.wandb.group or job.group, config=resolved)
    visualizer = FeatureVisualizer(OmegaConf.to_container(cfg.backends), staging, run_info)

    loaded = model_cache.load(cfg.model.config, cfg.model.checkpoint, cfg.device,
                              trust_checkpoint=cfg.model.trust_checkpoint)
    layers = select_layers(loaded.model, list(cfg.layers.names))
    log.info("model %s on %s; layers: %s", cfg.model.name, loaded.device, ", ".join(l.name for l in layers))
    reduce_fn = _reduce_fn(cfg, loaded)  # class options are checked here, before any output

    result = JobResult(output_dir=final)
    sharing = shared_forward.for_job(cfg, job.sweep_dir, loaded, layers)  # other jobs' layers, when planned
    extra = sharing.extra if sharing else []
    watch = getattr(loaded.model, "backbone", None)  # its input's aspect ratio shapes token maps
    record = partial(FeatureRecorder, layers + extra, watch=watch, root=loaded.model, quiet=[l.name for l in extra])
    inference = _Inference(cfg, loaded, layers, record(reduce_fn), sharing)  # Grad-CAM checks its class here
    if cfg.reduction.name == "pca_rgb" and cfg.reduction.shared_basis:
        inference.recorder = record(_fit_shared_pca(loaded, record, samples))
    with visualizer, inference as infer:
        visualizer.start()  # every input is checked by now: open W&B while the model runs
        visualizer.add_config(resolved)
        with Drawer(cfg, loaded, visualizer, result) as drawer:
            for item in _progress(inputs.iter_loaded(samples, problems), len(samples)):
                drawer.submit(Recorded(item, *infer(item)))
    result.forwards, result.reused = inference.forwards, inference.reused
    if inference.reused:
        log.info("%d of %d images drawn from an earlier job's forward pass (share_forward)",
                 inference.reused, inference.reused + inference.forwards)
    if not result.images:  # every image failed to decode: nothing to show
        raise inputs.InputError(problems[0].message)
    shutil.rmtree(final, ignore_errors=True)  # an earlier complete job in this folder: replaced
    staging.rename(final)
    log.info("results in %s", final)
    for offline in sorted((final / "wandb").glob("offline-run-*")):
        log.info("upload the offline W&B run with: wandb sync %s", offline)
    if problems:
        _report_skipped(problems, result)
    return result


def _reduce_fn(cfg: DictConfig, loaded: LoadedModel) -> Callable[..., Reduced]:
    """The reduction with its options; class reductions resolve their class now."""
    red = cfg.reduction
    options: Dict[str, Any] = {"topk": red.topk}
    if red.name == "class_map":
        options.update(class_map_options(loaded.model, red.target_class, loaded.dataset_meta["classes"]))
    return partial(reduce, red.name, **options)


def _fit_shared_pca(loaded: LoadedModel, record: Callable[..., FeatureRecorder],
                    samples: List[inputs.Sample]) -> Callable[..., Reduced]:
    """pca_rgb with reduction.shared_basis: a first pass over every image fits one basis per layer."""
    from mmseg.apis import inference_model

    bases = PcaBases()
    with record(bases.update) as recorder:
        for item in inputs.iter_loaded(samples, []):  # decoding problems are reported by the main pass
            inference_model(loaded.model, item.image_bgr)
            recorder.pop()
    bases.fit()
    log.info("pca_rgb: one basis per layer fitted over %d images", len(samples))
    return partial(reduce, "pca_rgb", basis=bases)


class _Inference:
    """image -> (prediction, {layer: [Reduced]}): forward hooks, or Grad-CAM's own forward and backward.

    With `sharing`, the recorder also records the layers of the sweep's other jobs, and an
    image another job already ran is taken from what that job kept.
    """

    def __init__(self, cfg: DictConfig, loaded: LoadedModel, layers: List[Any], recorder: FeatureRecorder,
                 sharing: Optional[shared_forward.Sharing] = None) -> None:
        self.model, self.layers, self.sharing = loaded.model, layers, sharing
        self.own = [layer.name for layer in layers]
        self.gradcam_class: Optional[int] = None
        self.recorder: Optional[FeatureRecorder] = recorder
        self.forwards = self.reused = 0
        if cfg.reduction.name in GRADIENT_REDUCTIONS:
            gradcam.check_supported(self.model)
            self.gradcam_class = resolve_class(cfg.reduction.target_class, loaded.dataset_meta["classes"])
            self.recorder = None  # Grad-CAM hooks the layers itself

    def __enter__(self) -> "_Inference":
        if self.recorder is not None:
            self.recorder.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(*exc)

    def __call__(self, item: inputs.Loaded) -> Tuple[Any, Dict[str, List[Reduced]]]:
        if self.recorder is None:
            self.forwards += 1
            res = gradcam.gradcam_maps(self.model, item.image_bgr, self.layers, self.gradcam_class)
            return res.sample, {name: [reduced] for name, reduced in res.maps.items()}
        kept = self.sharing.take(item.sample.image_path) if self.sharing else None
        if kept is not None:
            self.reused += 1
            sample, by_layer = kept
            return sample, flatten(by_layer, self.own)
        from mmseg.apis import inference_model

        sample = inference_model(self.model, item.image_bgr)
        self.forwards += 1
        by_layer = self.recorder.pop_layers()
        if self.sharing is not None:
            self.sharing.keep(item.sample.image_path, sample, by_layer, self.recorder.skipped)
        return sample, flatten(by_layer, self.own)


def _report_skipped(problems: List[inputs.Problem], result: JobResult) -> None:
    (result.output_dir / "skipped.txt").write_text("".join(f"{p.path}\t{p.message}\n" for p in problems))
    first = problems[0]
    raise SkippedImagesError(f"{len(problems)} image(s) skipped, first {first.path.name}: {first.message}; "
                             f"the other {len(result.images)} are in {result.output_dir} "
                             "(skipped.txt lists every skipped image)")


def _progress(items: Iterable[inputs.Loaded], total: int) -> Iterator[inputs.Loaded]:
    """A progress line on an interactive terminal; the job log has a line per image anyway."""
    tty = sys.stderr.isatty()
    for i, item in enumerate(items):
        if tty:
            sys.stderr.write(f"\rfeatvis [{i + 1}/{total}] {item.sample.stem[:40]:<40}")
            sys.stderr.flush()
        yield item
    if tty:
        sys.stderr.write("\n")


@dataclass
class Recorded:
    item: inputs.Loaded
    sample: Any  # mmseg's SegDataSample: prediction and the image's metainfo
    maps: Dict[str, List[Reduced]]


class Drawer:
    """Draws and logs each image's panels in a worker thread, while the model runs the next.

    A bounded queue keeps at most `depth` images waiting, so memory stays flat; an error
    in the worker stops the job at the next submit or when the drawer closes.
    With normalize.mode=shared the colour range of a layer depends on every image, so
    the (small, reduced) maps of all images are kept and drawn when the last one is in.
    """

    def __init__(self, cfg: DictConfig, loaded: LoadedModel, visualizer: FeatureVisualizer,
                 result: JobResult, depth: int = 2) -> None:
        self.cfg, self.loaded, self.visualizer, self.result = cfg, loaded, visualizer, result
        self.warned: Set[Tuple[str, str]] = set()  # (layer, problem) pairs already logged
        self.shared: Optional[Dict[str, rendering.SharedRange]] = (
            {} if cfg.normalize.mode == "shared" else None)  # layer -> its range over the run
        self._held: List[Recorded] = []  # shared mode: everything, drawn at the end
        self._queue: "queue.Queue[Optional[Recorded]]" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="featvis-draw", daemon=True)

    def __enter__(self) -> "Drawer":
        self._thread.start()
        return self

    def submit(self, recorded: Recorded) -> None:
        self._raise_worker_error()
        if self.shared is None:
            self._queue.put(recorded)
            return
        self._held.append(recorded)
        for layer, per_item in recorded.maps.items():
            ranges = self.shared.setdefault(layer, rendering.SharedRange())
            for m in per_item[0].maps:
                ranges.update(rendering.crop_valid(m, recorded.sample.metainfo))

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            for recorded in self._held:
                self._queue.put(recorded)
        self._queue.put(None)  # the worker stops after what is queued
        self._thread.join()
        if exc_type is None:
            self._raise_worker_error()

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while (recorded := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so the producer never blocks
            try:
                self._draw_and_log(recorded)
            except BaseException as err:  # re-raised in the job's thread
                self._error = err

    def _draw_and_log(self, recorded: Recorded) -> None:
        step, stem = len(self.result.images), recorded.item.sample.stem
        panels = _panels(self.cfg, self.loaded, recorded, self.warned, self.shared)
        pngs = {name: LazyPNG(image) for name, (image, *_) in panels.items()}
        if self.visualizer.stores_png:  # all of this image's pictures at once, on every core
            encode_all(pngs.values())
        for name, (image, caption, *extra) in panels.items():
            # extra: keyword data some backends use (W&B: masks, the run's table) and others ignore
            self.visualizer.add_image(name, image, step=step, image_id=stem, caption=caption, png=pngs[name],
                                      **(extra[0] if extra else {}))
        scalars = _stats_scalars(recorded.maps)
        if scalars:  # same step as the pictures: one W&B history row per image
            self.visualizer.add_scalars(scalars, step=step)
        self.result.images.append(stem)
        self.result.panels[stem] = list(panels)
        log.info("[%d] %s: %d pictures", step + 1, stem, len(panels))


def _panels(cfg: DictConfig, loaded: LoadedModel, recorded: Recorded, warned: Set[Tuple[str, str]],
            shared: Optional[Dict[str, "rendering.SharedRange"]] = None) -> Dict[str, tuple]:
    """One image's panels: {name: (RGB picture, caption[, extra keyword data for add_image])}.

    The input carries the label maps and class names (`pred_mask`, `gt_mask`, `class_names`),
    which W&B draws as interactive masks; feature maps carry `layer` and `stats`.
    """
    item, sample = recorded.item, recorded.sample
    palette = loaded.dataset_meta["palette"]
    stem, image = item.sample.stem, item.image_rgb
    pred = sample.pred_sem_seg.data[0].cpu().numpy()
    masks = {"pred_mask": pred, "gt_mask": item.gt, "class_names": list(loaded.dataset_meta["classes"])}
    panels: Dict[str, tuple] = {"input": (image, stem, masks)}
    if item.gt is not None:
        panels["ground_truth"] = (rendering.overlay_labels(item.gt, image, palette, 0.5), f"{stem} ground truth")
    panels["prediction"] = (rendering.overlay_labels(pred, image, palette, 0.5), f"{stem} prediction")
    for layer, per_item in recorded.maps.items():
        reduced: Reduced = per_item[0]  # one image per forward
        caption = _caption(stem, layer, cfg.reduction.name, reduced, warned)
        if cfg.reduction.name == "pca_rgb":  # three components drawn as R, G, B
            picture = rendering.overlay_rgb(reduced.maps, image, sample.metainfo, cfg.alpha)
            panels[f"featmap/{layer}"] = (picture, caption, {"layer": layer, "stats": reduced.stats})
            continue
        labels = [f"ch {c}" for c in reduced.channels] if reduced.channels and len(reduced.channels) > 1 else None
        rule = rendering.ScaleRule.from_config(cfg.normalize, shared=shared[layer].range() if shared else None)
        picture, scales = rendering.overlay_maps(reduced.maps, image, sample.metainfo, cfg.alpha,
                                                 cfg.reduction.arrangement, labels, scale=rule,
                                                 scale_bar=cfg.normalize.scale_bar, return_scales=True)
        described = sorted({rendering.describe(s) for s in scales if s is not None})
        panels[f"featmap/{layer}"] = (picture, " | ".join([caption, *described]),
                                      {"layer": layer, "stats": reduced.stats})
    return panels


def _stats_scalars(maps: Dict[str, List[Reduced]]) -> Dict[str, float]:
    """`stats/<layer>/<stat>` for every layer whose statistics were recorded (not Grad-CAM's)."""
    return {f"stats/{layer}/{key}": value for layer, per_item in maps.items()
            if per_item and per_item[0].stats for key, value in per_item[0].stats.items()}


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
    if reduced.note:
        notes.insert(0, reduced.note)
    return " | ".join([stem, layer, f"{reduction}{channels}", *notes])
