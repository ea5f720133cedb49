"""The sweep's W&B summary run: one run in the sweep's group comparing its jobs image by image.

Name `summary`, job_type `summary`, files under `<sweep dir>/summary/wandb/`. It logs a
`comparison` table (a row per image, a column per job that did not fail, each cell that
job's row of the image's contact sheet) and a `jobs` table (status, error, checkpoint,
layers, reduction, images). Opened through featvis.backends.wandb_run, as the jobs' runs
are: offline unless an API key is configured.

When the sweep's checkpoints were compared (featvis.sweep.checkpoints), it also logs
`checkpoint_cka` (a row per layer, a column per compared checkpoint), its picture
`checkpoint_cka_heatmap`, the difference sheets `checkpoint_diff/<image>`, and the scalars
`cka/<checkpoint>/<layer>`: each job's CKA against the baseline. They go to the summary
run, not the jobs' own: those are closed by the time the summary compares the jobs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from featvis.backends.encoding import png_bytes
from featvis.backends.wandb import resolve_mode
from featvis.backends.wandb_run import RunSpec, open_run
from featvis.config.job import JobInfo
from featvis.render.cka_table import cka_heatmap
from featvis.sweep.checkpoints import Comparison, compare_checkpoints
from featvis.sweep.diff import diff_file
from featvis.sweep.results import SUMMARY, JobRecord, WandbSettings, load_results
from featvis.sweep.shards import merge
from featvis.sweep.sheets import contact_sheet, sheet_stems

log = logging.getLogger(__name__)

WANDB_MARK = ".wandb-summary"  # created once in the summary folder, when the W&B summary run is started
StripFiles = Dict[str, Dict[str, Path]]  # image stem -> job name -> PNG file of the job's row


class Strips:
    """Each job's contact-sheet row per image, as PNG files in a temporary folder of the summary."""

    def __init__(self, out: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=".strips-", dir=out))
        self.files: StripFiles = {}

    def add(self, stem: str, rows: Dict[str, np.ndarray]) -> None:
        for name, strip in rows.items():
            path = self.dir / f"{sum(map(len, self.files.values()))}.png"
            path.write_bytes(png_bytes(strip))
            self.files.setdefault(stem, {})[name] = path

    def __enter__(self) -> "Strips":
        return self

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)  # wandb copied the pictures into the run at finish


def wandb_jobs(jobs: Sequence[JobRecord]) -> List[JobRecord]:
    """The jobs that logged to W&B (and so want a summary run)."""
    return [j for j in jobs if "wandb" in j.backends and j.wandb is not None]


def wandb_summary(sweep_dir: Path, jobs: Optional[List[JobRecord]] = None, once: bool = True,
                  strips: Optional[StripFiles] = None, comparison: Optional[Comparison] = None,
                  baseline: Optional[str] = None) -> Optional[Path]:
    """Write the summary run; returns its folder, or None when no job used W&B (or, with `once`, it exists).

    `strips` are the jobs' rows of the contact sheets as `summarize` wrote them; else drawn
    here. `comparison` is the checkpoint comparison `summarize` made; else made here (with
    `baseline`, as summarize's), its difference sheets read from the summary folder. The
    run's project, entity, mode and group are the first W&B job's. With `once`, only the
    first caller in the sweep creates it.
    """
    sweep_dir = Path(sweep_dir)
    jobs = merge(load_results(sweep_dir)) if jobs is None else jobs
    with_wandb = wandb_jobs(jobs)
    if not with_wandb:
        return None
    out = sweep_dir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    if once:
        try:
            os.close(os.open(out / WANDB_MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
    if comparison is None:
        comparison = compare_checkpoints(sweep_dir, jobs, baseline)
    if strips is None:
        with Strips(out) as drawn:
            for stem in sheet_stems(jobs):
                drawn.add(stem, contact_sheet(jobs, stem).strips)
            return _write_run(sweep_dir, jobs, with_wandb[0].wandb or WandbSettings(), drawn.files, comparison)
    return _write_run(sweep_dir, jobs, with_wandb[0].wandb or WandbSettings(), strips, comparison)


def checkpoint_logs(comparison: Comparison, out: Path) -> Dict[str, Any]:
    """What the summary run logs of the checkpoint comparison (nothing without one): tables, pictures, scalars."""
    import wandb  # noqa: PLC0415  (imported by _write_run already)

    rows, cols, values = comparison.cka_matrix()
    logs: Dict[str, Any] = {}
    for pair in comparison.models:  # another model config against the baseline model: heat map and best matches
        if pair.file is not None and (out / pair.file).is_file():
            caption = f"{pair.model_b} against {pair.model_a}"
            logs[f"model_similarity/{pair.b}"] = wandb.Image(str(out / pair.file), caption=caption)
        logs[f"model_best/{pair.b}"] = wandb.Table(columns=["layer", "most like", "cka"], data=pair.matches())
    if comparison.embeddings is not None:  # where the classes separate: a picture per layer, a table
        for layer, file in comparison.embeddings.files.items():
            if (out / file).is_file():
                logs[f"embedding/{layer}"] = wandb.Image(str(out / file), caption=f"{layer}: sampled pixels by class")
        logs["class_separability"] = wandb.Table(
            columns=["job", "layer", "accuracy", "chance", "pixels", "classes"],
            data=[[e.job, e.layer, e.numbers.accuracy, e.numbers.chance, e.numbers.pixels, e.numbers.classes]
                  for entries in comparison.embeddings.layers.values() for e in entries])
    if not rows:
        return logs
    table = wandb.Table(columns=["layer"] + cols)
    for row, cells in zip(rows, values.tolist()):
        table.add_data(row, *[None if np.isnan(v) else v for v in cells])
    title = f"{comparison.cka_label()} against {comparison.baselines()}"
    heatmap = cka_heatmap(values, rows, cols, title, comparison.cka_label())
    logs |= {"checkpoint_cka": table, "checkpoint_cka_heatmap": wandb.Image(heatmap)}
    if comparison.classes:  # per ground-truth class: one row per (job, layer, class)
        classes = wandb.Table(columns=["job", "layer", "class", "pixels", "cka", "cka_unbiased", "change", "note"])
        for c in comparison.classes:
            classes.add_data(c.b, c.layer, c.name, c.pixels, c.cka, c.cka_unbiased, c.change, c.note or "")
        logs["class_similarity"] = classes
    for group in comparison.groups:
        for stem in group.images:
            path = out / diff_file(stem)
            if f"checkpoint_diff/{stem}" not in logs and path.is_file():
                logs[f"checkpoint_diff/{stem}"] = wandb.Image(str(path), caption=f"{stem}: job - baseline")
    for s in comparison.similarities:
        group = next(g for g in comparison.groups if g.baseline.name == s.a)
        if s.shown(comparison.estimator) is not None:
            logs[f"cka/{group.labels[s.b]}/{comparison.row_label(group, s.layer)}"] = s.shown(comparison.estimator)
    return logs


def _write_run(sweep_dir: Path, jobs: Sequence[JobRecord], settings: WandbSettings, strips: StripFiles,
               comparison: Comparison) -> Path:
    import wandb  # noqa: PLC0415  (about a second to import: paid once, at the end of a sweep that uses W&B)

    save_dir = sweep_dir / SUMMARY / "wandb"
    save_dir.mkdir(exist_ok=True)
    group = settings.group or JobInfo(output_dir=sweep_dir, sweep_dir=sweep_dir).group
    spec = RunSpec(save_dir=save_dir, project=settings.project or "featvis", entity=settings.entity, group=group,
                   job_type="summary", name="summary", init_timeout=settings.init_timeout,
                   config={"sweep_dir": str(sweep_dir), "jobs": [j.name for j in jobs]})
    run, mode = open_run(spec, resolve_mode(settings.mode or "auto"),
                         offline_hint=f"upload it with `wandb sync` on the run folder under {save_dir}")
    try:
        names = [j.name for j in jobs if j.status != "failed"]
        table = wandb.Table(columns=["image"] + names)
        for stem, files in strips.items():
            cells = [wandb.Image(str(files[name]), caption=f"{name} | {stem}") if name in files else None
                     for name in names]
            table.add_data(stem, *cells)
        jobs_table = wandb.Table(columns=["job", "status", "error", "checkpoint", "layers", "reduction", "images"])
        for j in jobs:
            jobs_table.add_data(j.name, j.status, j.error or "", j.checkpoint or "", j.layers or "",
                                j.reduction or "", len(j.images))
        run.log({"comparison": table, "jobs": jobs_table, **checkpoint_logs(comparison, sweep_dir / SUMMARY)})
        run.finish()
    except BaseException:
        run.finish(exit_code=1)
        raise
    log.info("W&B summary run written under %s (%s)", save_dir, mode)
    return save_dir
