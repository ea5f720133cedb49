"""The sweep summary's `index.html`: every job with its status, and every contact sheet.

Rendered from the jinja2 template `templates/index.html.j2` (shipped as package data)
with autoescaping on: job names, overrides, errors and image names are the user's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from featvis.sweep.results import NO_PICTURES, JobRecord
from featvis.sweep.sheets import SheetLayout

TEMPLATES = Path(__file__).resolve().parent / "templates"
_ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@dataclass
class IndexRow:
    """One job's row of the index's table, as the text of its cells."""

    num: str
    dir: str  # the job's folder, relative to the sweep dir
    name: str
    status: str
    images: int
    forwards: str
    checkpoint: str
    layers: str
    reduction: str
    pictures: str  # empty, or why the job has no pictures in the contact sheets
    error: str


def render_index(sweep_dir: Path, jobs: Sequence[JobRecord], sheets: Dict[str, SheetLayout]) -> str:
    """The index page of `<sweep dir>/summary/` for these jobs and contact sheets (files in the same folder)."""
    rows = [IndexRow(num=str(j.num), dir=_relative(j.dir, sweep_dir), name=j.name, status=j.status,
                     images=len(j.images), forwards=forwards_cell(j), checkpoint=str(j.checkpoint),
                     layers=str(j.layers), reduction=str(j.reduction),
                     pictures="" if j.has_pictures else NO_PICTURES, error=j.error or "") for j in jobs]
    no_sheets = ("No contact sheets: no job ran with backends=[local]." if not any(j.has_pictures for j in jobs)
                 else "No contact sheets: no job drew an image yet.")
    return _ENV.get_template("index.html.j2").render(
        sweep_dir=str(sweep_dir), jobs=jobs, rows=rows, n_failed=sum(j.status == "failed" for j in jobs),
        sheets=sheets, no_sheets=no_sheets)


def forwards_cell(job: JobRecord) -> str:
    """`3`, or `0 (3 reused)` for a job that took its maps from an earlier job's forward passes."""
    if job.forwards is None:
        return ""
    return f"{job.forwards} ({job.reused} reused)" if job.reused else str(job.forwards)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
