"""The sweep summary's `index.html`: every job with its status, every contact sheet, and the checkpoints compared.

Rendered from the jinja2 template `templates/index.html.j2` (shipped as package data)
with autoescaping on: job names, overrides, errors and image names are the user's text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from featvis.sweep.checkpoints import Comparison
from featvis.sweep.diff import CheckpointPages
from featvis.sweep.manifest import Progress
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


@dataclass
class RankRow:
    """One layer of the checkpoint ranking, as the text of its cells."""

    rank: int
    layer: str
    baseline: str
    cells: List[str]  # per compared checkpoint (the table's columns): "CKA / change", empty where none
    change: str  # the largest change over the checkpoints


@dataclass
class CheckpointView:
    """The checkpoint comparison's part of the page."""

    columns: List[str]
    ranking: List[RankRow] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    cka_file: Optional[str] = None
    diffs: Dict[str, str] = field(default_factory=dict)  # image stem -> difference sheet file
    cka_label: str = "linear CKA"  # compare.estimator's name for the CKA shown
    models: List["ModelView"] = field(default_factory=list)  # other model configs against the baseline model
    separability: Optional["SeparabilityTable"] = None  # where the classes come apart, layer by layer
    classes: List["ClassTable"] = field(default_factory=list)  # per compared job: layer x ground-truth class


@dataclass
class SeparabilityTable:
    """Nearest class-centroid accuracy (chance) per layer and job, and each layer's embedding picture."""

    jobs: List[str]
    rows: List[Tuple[str, List[str], Optional[str]]]  # (layer, a cell per job, its picture)


@dataclass
class ModelView:
    """One job of another model config against the baseline model: its heat map and best matches."""

    title: str
    file: Optional[str]
    best: List[Tuple[str, str, str]]  # (its layer, the baseline layer most like it, that CKA)


@dataclass
class ClassTable:
    """One compared job against its baseline, per ground-truth class: a row per layer, a column per class."""

    job: str  # the compared checkpoint's caption
    baseline: str
    by: str  # "ground truth", or "the baseline's prediction" (images without ground truth)
    classes: List[str]
    rows: List[Tuple[str, List[str]]]  # (layer, "CKA / change" per class, "few" below the pixels needed)


def checkpoint_view(pages: CheckpointPages) -> CheckpointView:
    """The ranking table's text: a row per layer, largest change first, "CKA / change" per checkpoint."""
    comparison = pages.comparison
    columns = comparison.columns()
    names = {g.baseline.name: g for g in comparison.groups}
    rows = []
    for i, rank in enumerate(comparison.ranking(), 1):
        group = names[rank.a]
        by_col = {group.labels[b]: b for b in rank.cka}
        cells = [f"{_number(rank.cka[by_col[c]])} / {_number(rank.change[by_col[c]])}" if c in by_col else ""
                 for c in columns]
        rows.append(RankRow(rank=i, layer=comparison.row_label(group, rank.layer),
                            baseline=group.labels[group.baseline.name], cells=cells, change=_number(rank.max_change)))
    return CheckpointView(columns=columns, ranking=rows, errors=list(comparison.errors), cka_file=pages.cka_file,
                          diffs={stem: sheet.file for stem, sheet in pages.diffs.items()},
                          cka_label=comparison.cka_label(), classes=class_tables(comparison),
                          models=[model_view(pair) for pair in comparison.models],
                          separability=separability_table(comparison.embeddings))


def separability_table(embeddings: Any) -> Optional[SeparabilityTable]:
    if embeddings is None:
        return None
    jobs = list(dict.fromkeys(e.job for entries in embeddings.layers.values() for e in entries))
    rows = []
    for layer, entries in embeddings.layers.items():
        by_job = {e.job: e.numbers for e in entries}
        cells = [_separability_cell(by_job.get(job)) for job in jobs]
        rows.append((layer, cells, embeddings.files.get(layer)))
    return SeparabilityTable(jobs=jobs, rows=rows)


def _separability_cell(numbers: Any) -> str:
    if numbers is None or numbers.accuracy is None:
        return "-" if numbers is None else f"- ({numbers.classes} class)"
    return f"{numbers.accuracy:.3f} ({numbers.chance:.3f})"


def model_view(pair: Any) -> ModelView:
    rows = [(layer, match or "-", _number(value)) for layer, match, value in pair.matches()]
    return ModelView(title=f"{pair.model_b} ({pair.b}) against {pair.model_a} ({pair.a})", file=pair.file, best=rows)


def class_tables(comparison: Comparison) -> List[ClassTable]:
    """Per compared job with ground truth: "CKA / change" of each layer over each class's sampled pixels."""
    tables = []
    for group in comparison.groups:
        for job in group.jobs:
            mine = {(c.layer, c.name): c for c in comparison.classes if c.a == group.baseline.name and c.b == job.name}
            if not mine:
                continue
            layers, names = comparison.class_table(group, job.name)
            rows = [(comparison.row_label(group, layer),
                     [_class_cell(mine.get((layer, name)), comparison.estimator) for name in names])
                    for layer in layers]
            by = "the baseline's prediction" if next(iter(mine.values())).by == "prediction" else "ground truth"
            tables.append(ClassTable(job=group.labels[job.name], baseline=group.labels[group.baseline.name],
                                     by=by, classes=names, rows=rows))
    return tables


def _class_cell(found: Any, estimator: str) -> str:
    if found is None:
        return ""
    if found.note is not None:
        return f"few ({found.pixels} px)"
    return f"{_number(found.shown(estimator))} / {_number(found.change)}"


def render_index(sweep_dir: Path, jobs: Sequence[JobRecord], sheets: Dict[str, SheetLayout],
                 pages: Optional[CheckpointPages] = None, state: Optional[Progress] = None) -> str:
    """The index page of `<sweep dir>/summary/` for these jobs and contact sheets (files in the same folder),
    with the sweep's progress: stopped after which job, and the jobs that never ran."""
    state = state or Progress()
    rows = [IndexRow(num=str(j.num), dir=_relative(j.dir, sweep_dir), status=j.status,
                     name=f"{j.name} [{j.shards} shards]" if j.parts else j.name,
                     images=len(j.images), forwards=forwards_cell(j), checkpoint=str(j.checkpoint),
                     layers=str(j.layers), reduction=str(j.reduction),
                     pictures="" if j.has_pictures else NO_PICTURES, error=j.error or "") for j in jobs]
    no_sheets = ("No contact sheets: no job ran with backends=[local]." if not any(j.has_pictures for j in jobs)
                 else "No contact sheets: no job drew an image yet.")
    counts = Counter(j.status for j in jobs)
    if state.never_ran:
        counts["never ran"] = len(state.never_ran)
    sharded = any(j.parts for j in jobs)  # the plan counts shard jobs; the page shows jobs
    total = state.planned if state.planned is not None and not sharded else len(jobs)
    return _ENV.get_template("index.html.j2").render(
        sweep_dir=str(sweep_dir), jobs=jobs, rows=rows, total=total, counts=sorted(counts.items()),
        stopped=state.line(), never_ran=state.never_ran,
        sheets=sheets, no_sheets=no_sheets, checkpoints=None if pages is None else checkpoint_view(pages))


def forwards_cell(job: JobRecord) -> str:
    """`3`, or `0 (3 reused)` for a job that took its maps from an earlier job's forward passes."""
    if job.forwards is None:
        return ""
    return f"{job.forwards} ({job.reused} reused)" if job.reused else str(job.forwards)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
