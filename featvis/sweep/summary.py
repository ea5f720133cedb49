"""A sweep's summary: `summarize(sweep_dir)` and its command line, `python -m featvis.sweep.summary <sweep dir>`.

It reads every job's result record (featvis.sweep.results) and writes, in
`<sweep dir>/summary/`:

- `contact_<image stem>.png`: one sheet per image, a row per job that drew it
  (featvis.sweep.sheets);
- `index.html`: every contact sheet, and every job with its status, failed jobs with
  their error line (featvis.sweep.index);
- `summary.json`: the jobs, the sheets and their layout, for scripts;
- when jobs kept sketches (compare.sketch) and differ in checkpoint, the checkpoints
  compared layer by layer with a baseline (featvis.sweep.checkpoints): in summary.json
  `checkpoint_similarity` (a, b, layer, cka, change, cka_unbiased), `class_similarity` (the
  same per ground-truth class, when the images have masks), `model_similarity` (every layer of a
  job of another model config against every layer of the baseline model, `model_similarity_<k>.png`)
  and `checkpoint_ranking`, the CKA
  table as a picture `checkpoint_cka.png`, and per image a difference sheet
  `diff_<image stem>.png` (featvis.sweep.diff), all shown in index.html;
- with `wandb_run`, once per sweep, the W&B summary run (featvis.sweep.wandb_summary).

The Hydra callback that calls it after every job is featvis.sweep.callbacks.SweepSummary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from featvis.backends.encoding import png_bytes
from featvis.io import write_atomic
from featvis.render.cka_table import cka_heatmap
from featvis.render.embedding import embedding_picture
from featvis.sweep import manifest
from featvis.sweep.checkpoints import UNREADABLE, Comparison, compare_checkpoints
from featvis.sweep.diff import CheckpointPages, write_diff_sheets
from featvis.sweep.embeddings import Embeddings
from featvis.sweep.index import render_index
from featvis.sweep.results import SUMMARY, JobRecord, load_results
from featvis.sweep.shards import merge
from featvis.sweep.sheets import SheetLayout, contact_sheet, sheet_stems
from featvis.sweep.wandb_summary import WANDB_MARK, Strips, wandb_jobs, wandb_summary

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
INDEX_FILE = "index.html"
CKA_FILE = "checkpoint_cka.png"


def summarize(sweep_dir: Path, wandb_run: bool = False, baseline: Optional[str] = None) -> Path:
    """Write `<sweep_dir>/summary/` from every job's result file; returns that folder.

    `baseline` names the checkpoint (or job) the others are compared with, over the jobs'
    own compare.baseline.
    """
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    records = load_results(sweep_dir)
    jobs = merge(records)  # a sharded job's shards as one job (featvis.sweep.shards)
    wanted = wandb_run and wandb_jobs(jobs) and not (out / WANDB_MARK).exists()
    strips = Strips(out) if wanted else None  # each job's row of each sheet, for the W&B table
    sheets: Dict[str, SheetLayout] = {}
    for stem in sheet_stems(jobs):
        sheet = contact_sheet(jobs, stem)
        sheet.layout.file = f"contact_{stem}.png"
        write_atomic(out / sheet.layout.file, png_bytes(sheet.rgb))
        sheets[stem] = sheet.layout
        if strips is not None:
            strips.add(stem, sheet.strips)
    pages = checkpoint_pages(sweep_dir, jobs, out, baseline)
    state = manifest.progress(sweep_dir, [r.num for r in records])
    write_atomic(out / SUMMARY_FILE, json.dumps(summary_json(sweep_dir, jobs, sheets, pages, state), indent=2))
    write_atomic(out / INDEX_FILE, render_index(sweep_dir, jobs, sheets, pages, state))
    if strips is not None:
        with strips:
            wandb_summary(sweep_dir, jobs, strips=strips.files,
                          comparison=pages.comparison if pages is not None else Comparison())
    return out


def checkpoint_pages(sweep_dir: Path, jobs: Sequence[JobRecord], out: Path,
                     baseline: Optional[str] = None) -> Optional[CheckpointPages]:
    """Compare the checkpoints and draw the pictures; None when no two jobs kept comparable sketches."""
    comparison = compare_checkpoints(sweep_dir, jobs, baseline)
    if not comparison:
        return None
    for line in comparison.errors:
        log.warning("featvis checkpoint comparison: %s", line)
    pages = CheckpointPages(comparison)
    try:
        pages.diffs = write_diff_sheets(comparison, out)
    except UNREADABLE as err:
        comparison.errors.append(f"no difference sheets: a sketch cannot be read ({err})")
    rows, cols, values = comparison.cka_matrix()
    if rows:
        title = f"{comparison.cka_label()} against {comparison.baselines()}"
        write_atomic(out / CKA_FILE, png_bytes(cka_heatmap(values, rows, cols, title, comparison.cka_label())))
        pages.cka_file = CKA_FILE
    if comparison.embeddings is not None:
        write_embeddings(comparison.embeddings, out)
    label = comparison.cka_label()
    for k, pair in enumerate(comparison.models):  # a heat map per model compared with the baseline model
        pair.file = f"model_similarity_{k}.png"
        title = f"{label}: {pair.model_b} ({pair.b}) against {pair.model_a}"
        picture = cka_heatmap(pair.shown(), pair.matrix.rows, pair.matrix.cols, title, label)
        write_atomic(out / pair.file, png_bytes(picture))
    log.info("checkpoints compared in %.2fs: %d layer(s) x job(s), %d model(s) against a baseline model",
             comparison.seconds, len(comparison.similarities), len(comparison.models))
    return pages


def write_embeddings(embeddings: Embeddings, out: Path) -> None:
    """A picture per layer: each job's sampled pixels by class, side by side (`embedding_<k>.png`)."""
    for k, (layer, entries) in enumerate(embeddings.layers.items()):
        panels = [(f"{e.job}\n{_view(e.share)}\nclass-centroid accuracy {_acc(e.numbers)}", e.coords, e.classes)
                  for e in entries]
        how = ("t-SNE of each job's pixels" if embeddings.method == "tsne"
               else "each job on its own first two principal components")
        title = f"{layer}: sampled pixels by ground-truth class ({how})"
        embeddings.files[layer] = f"embedding_{k}.png"
        write_atomic(out / embeddings.files[layer],
                     png_bytes(embedding_picture(panels, embeddings.names, embeddings.palette, title)))


def _view(share: Optional[float]) -> str:
    return "t-SNE (seeded)" if share is None else f"PC1-2: {100 * share:.0f}% of the variance"


def _acc(numbers: Any) -> str:
    if numbers.accuracy is None:
        return "-"
    return f"{numbers.accuracy:.2f} (chance {numbers.chance:.2f})"


def summary_json(sweep_dir: Path, jobs: Sequence[JobRecord], sheets: Dict[str, SheetLayout],
                 pages: Optional[CheckpointPages] = None, state: Optional[manifest.Progress] = None) -> Dict[str, Any]:
    """The contents of `summary.json`: each job's result record (`dir` relative to the sweep), sheets, counts,
    and the sweep's progress (`planned`, `never_ran`, `interrupted`, `stopped`: featvis.sweep.manifest).

    With a checkpoint comparison, also `checkpoint_similarity`, `checkpoint_ranking`,
    `checkpoint_baselines`, `checkpoint_errors`, `checkpoint_cka` and `diff_sheets`.
    """
    listed: List[Dict[str, Any]] = []
    for job in jobs:
        entry = {k: v for k, v in job.to_json().items() if k != "job_dir"}
        entry["dir"] = str(job.dir.relative_to(sweep_dir))
        listed.append(entry)
    data = {"sweep_dir": str(sweep_dir), "jobs": listed,
            "sheets": {stem: layout.to_json() for stem, layout in sheets.items()},
            "counts": dict(Counter(j.status for j in jobs)), **(state or manifest.Progress()).to_json()}
    if state is not None and state.never_ran:
        data["counts"]["never-ran"] = len(state.never_ran)
    if pages is not None:
        data.update(pages.to_json())
    return data


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featvis.sweep.summary",
                                     description="Summarize a featvis multirun sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true",
                        help="also write the W&B summary run (again, if one was written before)")
    parser.add_argument("--baseline", default=None,
                        help="compare the checkpoints with this one (a job name or checkpoint), "
                             "over the jobs' compare.baseline")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"featvis: error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 1
    out = summarize(args.sweep_dir, baseline=args.baseline)
    if args.wandb:
        wandb_summary(args.sweep_dir, once=False, baseline=args.baseline)
    n = len(merge(load_results(args.sweep_dir)))
    stopped = manifest.progress(args.sweep_dir, []).line()
    print(f"{n} job(s) summarized{f' (the sweep was {stopped})' if stopped else ''}: {out / INDEX_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
