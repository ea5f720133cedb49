"""One featvis job: images -> model -> recorded layers -> pictures -> backends.

The order matters for failing well: everything that can be checked (config values,
images and masks, layers, checkpoint) is checked before any output is written, and
outputs go to `<output_dir>/featvis.partial/`, renamed to `<output_dir>/featvis/`
only when the job completes. A failed job never leaves results that look complete.
Before any image is decoded, the memory each one will need is checked against what the
machine has (featvis.engine.budget): an image that does not fit is skipped like an
unreadable one, and the decoder's and drawer's queues are shortened when large images
would not fit them.
A job of a sweep leaves a piece per image it draws (featvis.pipeline.resume): launched
again, it keeps the images an earlier launch drew and draws the others. A shard of a job
whose colour scale spans every image (normalize.mode=shared, pca_rgb's shared basis) fits
its part of the scale first (featvis.pipeline.fits).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from rich.console import Console
from rich.progress import track

from featvis.backends.base import RunInfo
from featvis.backends.encoding import workers
from featvis.backends.visualizer import FeatureVisualizer
from featvis.config import output_folder
from featvis.config.job import JobInfo
from featvis.config.schema import Config, NormalizeMode, plain
from featvis.data import dataset, masks
from featvis.data import images as inputs
from featvis.data.batches import same_shape_batches
from featvis.data.prefetch import Prefetch
from featvis.engine import budget as memory
from featvis.engine.drawer import Drawer
from featvis.engine.result import RESULTS_DIR, JobResult
from featvis.engine.session import Session
from featvis.errors import SkippedImagesError
from featvis.model import cache as model_cache
from featvis.model.load import LoadedModel
from featvis.pipeline import fits as fits_module
from featvis.pipeline import resume
from featvis.pipeline.fits import ShardFits
from featvis.pipeline.sketches import JobSketches
from featvis.record.slide import slide_windows
from featvis.reduce.base import Reduction
from featvis.stderr import warn
from featvis.sweep import inputs as sweep_inputs
from featvis.sweep import manifest, shards, shared_forward

log = logging.getLogger(__name__)


def run(cfg: Config, job: JobInfo) -> JobResult:
    """Run one job of the validated, typed `cfg` (featvis.config.schema.validate: the command line's one conversion).

    The model's CPU threads are the job's own while it runs (`threads`, or the cores a parallel
    launcher leaves each job), and put back after it.
    """
    running, cpus, before = _running_at_once(job), shards.machine_cpus(), torch.get_num_threads()
    threads = cfg.threads or shards.threads(cpus, running)  # a Slurm task's cores, or the machine's share
    if cfg.threads is None and running == 1 and before <= cpus:
        threads = before  # torch's own choice, within what the process may use
    if threads != before:
        log.info("%d CPU threads for the model (%s)", threads, "threads" if cfg.threads else
                 f"{running} job(s) of the sweep at once on {cpus} cores")
        torch.set_num_threads(threads)
    if cfg.device == "auto" and running > 1 and torch.cuda.device_count() > 1 and job.num is not None:
        cfg = dataclasses.replace(cfg, device=f"cuda:{job.num % torch.cuda.device_count()}")  # jobs side by side
    try:
        return _run(cfg, job)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _running_at_once(job: JobInfo) -> int:
    """How many jobs of this job's sweep run at once on this machine (1 for a single run)."""
    if job.sweep_dir is None:
        return 1
    planned = manifest.read(job.sweep_dir)
    return shards.running_at_once(job.launcher, job.launcher_jobs, planned.planned if planned else None,
                                  shards.machine_cpus())


def _run(cfg: Config, job: JobInfo) -> JobResult:
    collected = dataset.collect_any(cfg.image, cfg.gt_mask, cfg.model.config, cfg.data_root,
                                   cfg.model.cfg_options, cfg.model.scale, max_pixels=cfg.max_image_pixels)
    samples = inputs.choose(collected.usable(), cfg.max_images, cfg.sample, cfg.seed)
    problems = list(collected.problems)  # images set aside; more may join while decoding
    if cfg.shard is not None and cfg.shards > 1 and job.sweep_dir is not None:
        samples, problems = _shard_of(cfg, job, samples, problems)
    for problem in problems:
        log.warning("skipping %s: %s", problem.path, problem.message)
    if cfg.gt_mask and not cfg.image.startswith(inputs.DATASET_PREFIX) and not any(s.mask_path for s in samples):
        first = samples[0].image_path
        warn(log, f"gt_mask={cfg.gt_mask} matched none of the {len(samples)} image(s) by file stem: no ground "
                  f"truth is drawn; name each mask after its image (the mask of {first.name} is {first.stem}.png)")

    final = job.output_dir / RESULTS_DIR
    staging = job.output_dir / (RESULTS_DIR + ".partial")
    resolved = plain(cfg)
    run_info = RunInfo(name=job.name, job_type=job.job_type, group=cfg.wandb.group or job.group, config=resolved)
    visualizer = FeatureVisualizer(resolved["backends"], staging, run_info)

    loaded = model_cache.load(cfg.model.config, cfg.model.checkpoint, cfg.device,
                              trust_checkpoint=cfg.model.trust_checkpoint, strict=cfg.model.strict,
                              cfg_options=cfg.model.cfg_options, scale=cfg.model.scale)
    # the engine: layers, reduction (its options and class checked before any output) and drawing style
    session = Session(loaded, cfg.layers.names if cfg.layers.names is not None else cfg.layers.preset,
                      cfg.reduction, alpha=cfg.alpha, normalize=cfg.normalize, batch_size=cfg.batch_size,
                      layer_presets=cfg.model.layer_presets, max_image_pixels=cfg.max_image_pixels)
    layers, reduction = session.layers, session.reduction
    log.info("model %s on %s; layers%s: %s", cfg.model.name, loaded.device,
             f" (preset {cfg.layers.preset})" if cfg.layers.preset else "", ", ".join(layer.name for layer in layers))

    result = JobResult(output_dir=final, weights=loaded.weights_note)  # model.strict=false: what did not fit
    sharing = shared_forward.for_job(cfg, job.sweep_dir, loaded, layers)  # other jobs' layers, when planned
    extra = sharing.extra if sharing else []
    sketches = JobSketches.for_job(cfg, job, reduction, staging,  # compare.*: off unless asked, then free
                                   classes=loaded.dataset_meta.get("classes") or (),
                                   palette=loaded.dataset_meta.get("palette") or ())
    session.share(extra, sharing, sketches.points)
    samples, plan = _within_memory(cfg, loaded, layers, extra, reduction, samples, problems)
    fits = fits_module.for_shard(cfg, job, resolved, reduction)  # a sharded job's scale over the whole split
    ranges = fits_module.fitted_scale(fits, cfg, session, samples) if fits is not None else None
    key = output_folder.RUN_KEY if job.sweep_dir is None else output_folder.SWEEP_KEY
    with output_folder.hold(job.output_dir, key):  # held for the whole job by featvis.cli; busy: FolderBusyError
        pieces, done = _resume(cfg, job, staging, resolved, samples, reduction, fits)  # or staging cleared
    todo = [sample for sample in samples if sample.stem not in done]
    session.fit(inputs.iter_loaded(samples, []))  # pca_rgb's shared basis: over every image first
    items = masks.checked(inputs.iter_loaded(todo, problems), len(loaded.dataset_meta["classes"]), result.labels)
    sketches.pieces = pieces
    for earlier in done.values():  # drawn by an earlier launch of this sweep: kept
        sketches.restore(earlier)
        result.images.append(earlier.stem)
        result.panels[earlier.stem] = earlier.panels
        if earlier.labels:
            result.labels[earlier.stem] = earlier.labels
    logged = None if pieces is None else (
        lambda stem, panels: pieces.done(stem, panels, result.labels.get(stem), sketches.writer is not None))
    with session:
        first = _first_image(items, problems) if todo else None  # a single image that does not decode fails here
        # class_map fits some layers only, which a real map tells: its first image runs before any output too
        early = session.record([first])[0] if first is not None and reduction.fits_some_layers else None
        with visualizer:
            visualizer.start()  # every input is checked by now: open W&B while the model runs
            visualizer.add_config(resolved)
            if done:
                visualizer.resume(len(done))
            with Drawer(session.style, visualizer, result, depth=plan.drawer, ranges=ranges, logged=logged) as drawer:
                if early is None and first is not None:  # the layers that never ran, or a job with no map
                    early = session.record([first])[0]
                if early is not None:
                    drawer.submit(sketches.add(early))
                with Prefetch(items, depth=plan.prefetch) as ahead:  # decoded while the model runs
                    for batch in same_shape_batches(_progress(ahead, max(0, len(todo) - 1)), cfg.batch_size):
                        for recorded in session.record(batch):
                            drawer.submit(sketches.add(recorded))
            sketches.finish(visualizer, step=len(result.images) - 1)  # in the staging folder: moved with it
    inference = session.inference
    result.forwards, result.reused, result.passes = inference.forwards, inference.reused, inference.passes
    if cfg.batch_size > 1:
        log.info("%d images in %d forward passes (batch_size=%d)", inference.forwards, inference.passes,
                 cfg.batch_size)
    if inference.reused:
        log.info("%d of %d images drawn from an earlier job's forward pass (share_forward)",
                 inference.reused, inference.reused + inference.forwards)
    if done:
        log.info("%d of %d images were drawn by an earlier launch of this sweep: kept, the other %d drawn now",
                 len(done), len(samples), len(todo))
    if pieces is not None:
        pieces.remove()
    shutil.rmtree(final, ignore_errors=True)  # an earlier complete job in this folder: replaced
    staging.rename(final)
    log.info("results in %s", final)
    for offline in sorted((final / "wandb").glob("offline-run-*")):
        log.info("upload the offline W&B run with: wandb sync %s", offline)
    if result.labels:  # masks holding values that are not classes: drawn as unlabelled, listed here
        (final / masks.LABELS_FILE).write_text(masks.labels_text(result.labels, {s.stem: s.mask_path for s in samples}))
    if problems:
        _report_skipped(problems, result)
    return result


def _resume(cfg: Config, job: JobInfo, staging: Path, resolved: Dict[str, Any], samples: List[inputs.Sample],
            reduction: Reduction, fits: Optional[ShardFits]) -> Tuple[Optional[resume.Pieces], Dict[str, resume.Done]]:
    """A sweep job keeps a piece per image it draws; launched again, the images of its own pieces are kept
    (featvis.pipeline.resume). Not when a picture's colours depend on every image of the job, unless that
    scale was fitted before drawing (a sharded job's, featvis.pipeline.fits)."""
    whole = fits_module.whole_split_scale(cfg, reduction) is not None and fits is None
    this = manifest.read(job.sweep_dir) if job.sweep_dir is not None else None
    stamp = dict(resolved, _scale=fits.stamp()) if fits is not None else resolved
    return resume.Pieces.prepare(staging, this.id if this else None, stamp, allowed=not whole,
                                 order=[sample.stem for sample in samples])


def _shard_of(cfg: Config, job: JobInfo, samples: List[inputs.Sample], problems: List[inputs.Problem]
              ) -> Tuple[List[inputs.Sample], List[inputs.Problem]]:
    """This shard's slice of the sweep's input list (featvis.sweep.inputs: the first shard's, for all of them);
    the images set aside while listing are said by shard 0 only."""
    assert job.sweep_dir is not None and cfg.shard is not None
    listed, said = sweep_inputs.shared(job.sweep_dir, sweep_inputs.key_of(cfg), lambda: (samples, problems))
    start, stop = shards.part(len(listed), cfg.shard, cfg.shards)
    if start == stop:
        raise inputs.InputError(f"shard {cfg.shard} of {cfg.shards} has no image: the job has {len(listed)}; "
                                f"use shards={max(1, len(listed))} or fewer")
    log.info("shard %d of %d: images %d to %d of %d (%s ... %s)", cfg.shard, cfg.shards, start + 1, stop,
             len(listed), listed[start].stem, listed[stop - 1].stem)
    return listed[start:stop], (list(said) if cfg.shard == 0 else [])


def _within_memory(cfg: Config, loaded: LoadedModel, layers: list, extra: list, reduction: Reduction,
                   samples: List[inputs.Sample], problems: List[inputs.Problem]
                   ) -> Tuple[List[inputs.Sample], memory.Plan]:
    """The samples whose decoding, forward pass and pictures fit the memory available, and the depths of the
    decoder's and the drawer's queues; the others join `problems`. None fitting: the first one's error."""
    budget = memory.Budget(memory.probe(loaded.model), pipeline=loaded.model.cfg.get("test_pipeline") or [],
                           layers=layers + extra, drawn=layers, gradients=reduction.uses_gradients,
                           slide=slide_windows(loaded.model) is not None, host=memory.available(cfg.max_memory_gib),
                           device=memory.available_device(loaded.device), workers=workers(),
                           holds_all=cfg.normalize.mode == NormalizeMode.shared)
    prefetch, drawer = 2 * cfg.batch_size, max(2, workers())  # featvis's depths, Drawer's default
    kept, refused, plan = budget.plan(samples, cfg.batch_size, prefetch, drawer)
    for problem in refused:
        log.warning("skipping %s: %s", problem.path, problem.message)
    if not kept:
        raise inputs.InputError(refused[0].message)
    problems.extend(refused)
    mib = plan.need / (1 << 20)
    if (plan.prefetch, plan.drawer) != (prefetch, drawer):
        log.warning("memory: %s available (%s); the largest images need about %.0f MiB with %d decoded ahead and %d "
                    "waiting to be drawn (lowered from %d and %d)", memory.gib(budget.host.bytes), budget.host.source,
                    mib, plan.prefetch, plan.drawer, prefetch, drawer)
    else:
        log.info("memory: %s available (%s); the job needs about %.0f MiB at most", memory.gib(budget.host.bytes),
                 budget.host.source, mib)
    return kept, plan


def _first_image(items: Iterator[inputs.Loaded], problems: List[inputs.Problem]) -> inputs.Loaded:
    """The first image that decodes (the others after it are decoded as the job goes); when none
    does (a single truncated image), the job fails here, before it writes anything."""
    for item in items:
        return item
    raise inputs.InputError(problems[0].message if problems else "no image could be decoded")


def _report_skipped(problems: List[inputs.Problem], result: JobResult) -> None:
    (result.output_dir / "skipped.txt").write_text("".join(f"{p.path}\t{p.message}\n" for p in problems))
    first = problems[0]
    raise SkippedImagesError(f"{len(problems)} image(s) skipped, first {first.path.name}: {first.message}; "
                             f"the other {len(result.images)} are in {result.output_dir} "
                             "(skipped.txt lists every skipped image)", result)


def _progress(items: Iterable[inputs.Loaded], total: int) -> Iterable[inputs.Loaded]:
    """A progress bar on an interactive terminal (stderr); the job log has a line per image anyway."""
    console = Console(stderr=True)
    return track(items, total=total, description="featvis", console=console, transient=True,
                 disable=not console.is_terminal)
