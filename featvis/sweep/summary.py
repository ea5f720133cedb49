"""A sweep's summary: `summarize(sweep_dir)` and its command line, `python -m featvis.sweep.summary <sweep dir>`.

It reads every job's result record (featvis.sweep.results) and writes, in
`<sweep dir>/summary/`:

- `contact_<image stem>.png`: one sheet per image, a row per job that drew it
  (featvis.sweep.sheets);
- `index.html`: every contact sheet, and every job with its status, failed jobs with
  their error line (featvis.sweep.index);
- `summary.json`: the jobs, the sheets and their layout, for scripts;
- with `wandb_run`, once per sweep, the W&B summary run (featvis.sweep.wandb_summary).

The Hydra callback that calls it after every job is featvis.sweep.callbacks.SweepSummary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from featvis.io import write_atomic
from featvis.sweep.index import render_index
from featvis.sweep.results import SUMMARY, JobRecord, load_results
from featvis.sweep.sheets import SheetLayout, contact_sheet, png_bytes, sheet_stems
from featvis.sweep.wandb_summary import WANDB_MARK, Strips, wandb_jobs, wandb_summary

SUMMARY_FILE = "summary.json"
INDEX_FILE = "index.html"


def summarize(sweep_dir: Path, wandb_run: bool = False) -> Path:
    """Write `<sweep_dir>/summary/` from every job's result file; returns that folder."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    jobs = load_results(sweep_dir)
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
    write_atomic(out / SUMMARY_FILE, json.dumps(summary_json(sweep_dir, jobs, sheets), indent=2))
    write_atomic(out / INDEX_FILE, render_index(sweep_dir, jobs, sheets))
    if strips is not None:
        with strips:
            wandb_summary(sweep_dir, jobs, strips=strips.files)
    return out


def summary_json(sweep_dir: Path, jobs: Sequence[JobRecord], sheets: Dict[str, SheetLayout]) -> Dict[str, Any]:
    """The contents of `summary.json`: each job's result record (`dir` relative to the sweep), sheets, counts."""
    listed: List[Dict[str, Any]] = []
    for job in jobs:
        data = {k: v for k, v in job.to_json().items() if k != "job_dir"}
        data["dir"] = str(job.dir.relative_to(sweep_dir))
        listed.append(data)
    return {"sweep_dir": str(sweep_dir), "jobs": listed,
            "sheets": {stem: layout.to_json() for stem, layout in sheets.items()},
            "counts": dict(Counter(j.status for j in jobs))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featvis.sweep.summary",
                                     description="Summarize a featvis multirun sweep folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true",
                        help="also write the W&B summary run (again, if one was written before)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"featvis: error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 1
    out = summarize(args.sweep_dir)
    if args.wandb:
        wandb_summary(args.sweep_dir, once=False)
    n = len(load_results(args.sweep_dir))
    print(f"{n} job(s) summarized: {out / INDEX_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
