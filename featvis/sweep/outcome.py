"""How a sweep ended, told on the command line: one line per job that did not end ok, and the exit code.

A failed multirun job does not raise to Hydra (featvis.cli.job): it writes its result
file (featvis.sweep.results) and returns, so the launcher runs the others, Hydra prints
nothing of its own and the sweep's callbacks all run. When the sweep is over, the sweep's
process reads every job's result file written since the sweep started (jobs of parallel
launchers run in other processes) and `report` prints

    featvis: error: job 1 (layers=backbone): layer 'backbone.nosuch' matches no module ...

for each failed job and each job that skipped images, in job order, and returns the exit
code: 1 when any job failed, 3 when jobs only skipped images, 0 when all were ok.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, TextIO, Tuple

from featvis.errors import FittedOnlyError, SkippedImagesError

SLACK_S = 1.0  # file systems with coarse timestamps: a result file may read as written up to this much earlier

_sweep: Optional[Tuple[Path, float]] = None  # the sweep this process runs, and when it started


def started(sweep_dir: Path) -> None:
    """Note that this process runs the sweep in `sweep_dir` (from its callback, or from its first job)."""
    global _sweep
    sweep_dir = Path(sweep_dir).absolute()
    if _sweep is None or _sweep[0] != sweep_dir:
        _sweep = (sweep_dir, time.time())


def running() -> Optional[Path]:
    """The sweep this process ran, if any."""
    return _sweep[0] if _sweep else None


def report(stream: TextIO) -> int:
    """Print one line per job of this process's sweep that did not end ok; return the sweep's exit code."""
    if _sweep is None:
        return 0
    from featvis.sweep.results import RESULT_FILE, load_results  # noqa: PLC0415 - lazy: mmengine (~2 s), sweeps only

    sweep_dir, since = _sweep
    lines: List[str] = []
    code = 0
    for record in load_results(sweep_dir):
        try:
            if (record.dir / RESULT_FILE).stat().st_mtime < since - SLACK_S:
                continue  # an earlier sweep's job in the same folder
        except OSError:
            continue
        if record.status == "ok":
            continue
        # its name: the overrides that tell it from the other jobs (featvis.config.job.JobInfo.name)
        fitted = record.status == "fitted"  # not an error: the job waits for the other shards' fits
        lines.append(f"featvis: {'' if fitted else 'error: '}job {record.num} ({record.name}): "
                     f"{record.error or record.status}")
        skipped = record.status == "skipped-images"
        job_code = SkippedImagesError.exit_code if skipped else FittedOnlyError.exit_code if fitted else 1
        code = max(code, job_code, key=_severity)
    for line in lines:
        print(line, file=stream)
    return code


def _severity(code: int) -> int:
    """1 (a job failed) outranks 3 (images skipped), which outranks 4 (shards fitted, to draw next launch)
    and 0."""
    return {0: 0, FittedOnlyError.exit_code: 1, SkippedImagesError.exit_code: 2}.get(code, 3)
