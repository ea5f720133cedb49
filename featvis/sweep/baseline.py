"""Which job of a group the others are compared with: compare.baseline, as the jobs composed it.

A group is the jobs whose overrides are the same apart from model.checkpoint and the plumbing
keys (featvis.config.job.PLUMBING). The baseline is named by a job name, a checkpoint as given
on the command line, or a checkpoint's file name, read from the sketch's meta, else the job's
`.hydra/config.yaml`, else the sweep's `multirun.yaml`; none = the job with the lowest number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import yaml

from featvis.config.job import PLUMBING
from featvis.sweep.results import JobRecord

CHECKPOINT_KEY = "model.checkpoint"


def group_key(job: JobRecord) -> str:
    """The job's overrides but its checkpoint and plumbing: jobs with the same key differ in checkpoint only."""
    return key_without(job, lambda key: key == CHECKPOINT_KEY)


def key_without(job: JobRecord, varies: Callable[[str], bool]) -> str:
    """The job's overrides but those whose key `varies` and the plumbing keys, as one string: jobs with the
    same one differ in those keys only."""
    kept = []
    for override in job.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not varies(key) and key.split(".")[0] not in PLUMBING:
            kept.append(override)
    return ",".join(sorted(kept))


def configured_baseline(sweep_dir: Path, jobs: Sequence[JobRecord], metas: Dict[Path, Dict[str, Any]]) -> Optional[str]:
    """compare.baseline as the group's jobs composed it (the first job that set one); None = not set."""
    for job in jobs:
        meta = metas.get(job.dir, {})
        if meta.get("baseline") is not None:
            return str(meta["baseline"])
        value = _config_value(job.dir / ".hydra" / "config.yaml")
        if value is not None:
            return value
    return _config_value(sweep_dir / "multirun.yaml")


def pick_baseline(jobs: Sequence[JobRecord], wanted: Optional[str]) -> JobRecord:
    """The job `wanted` names (job name, checkpoint as given, checkpoint file name); None = the lowest number."""
    if wanted is None:
        return min(jobs, key=lambda j: (j.num if isinstance(j.num, int) else math.inf, str(j.dir)))
    for match in (lambda j: j.name == wanted,
                  lambda j: any(_checkpoint_override(o) == wanted for o in j.overrides),
                  lambda j: j.checkpoint is not None and j.checkpoint == os.path.basename(wanted.rstrip("/"))):
        found = [j for j in jobs if match(j)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            break
    names = ", ".join(j.checkpoint or j.name for j in jobs)
    raise ValueError(f"compare.baseline={wanted!r} names none (or several) of the jobs compared: "
                     f"use a job name or one of their checkpoints: {names}")


def column_labels(jobs: Sequence[JobRecord]) -> Dict[str, str]:
    """job name -> its checkpoint's file name; where two jobs share a file name, `<file> #<job number>`."""
    files = [j.checkpoint for j in jobs]
    return {j.name: j.checkpoint if j.checkpoint and files.count(j.checkpoint) == 1 else f"{j.checkpoint} #{j.num}"
            for j in jobs}


def _config_value(path: Path) -> Optional[str]:
    """compare.baseline in a composed config file (a job's .hydra/config.yaml, a sweep's multirun.yaml)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    value = ((data or {}).get("compare") or {}).get("baseline") if isinstance(data, dict) else None
    return None if value is None else str(value)


def _checkpoint_override(override: str) -> Optional[str]:
    key, _, value = override.partition("=")
    if key.lstrip("+~") != CHECKPOINT_KEY:
        return None
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value
