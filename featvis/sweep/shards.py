"""Shards: one job's images split among N jobs of a sweep, merged back by the summary.

`python run.py -m shards=N ...` makes every job of the sweep N jobs (`shard=range(0,N)` is added
for Hydra's sweeper: `expand`), under any launcher: the basic one, joblib on this machine,
submitit on Slurm, Ray. Each shard job reads the same input list (featvis.sweep.inputs: written
once per sweep, an image's name follows from that list alone) and draws its own contiguous
slice of it (`part`). The sweep's summary reads a job's shards as one job (`merge`): every
image once, in list order, one row per image on the contact sheets, and the checkpoint
comparison over all of its images (CKA and change accumulate sums image by image, so the
merged numbers are the unsharded job's). A job whose shard failed is failed; one whose shards
have not all finished is `incomplete`. A shard stopped mid-way keeps the images it drew when
the sweep is launched again (featvis.pipeline.resume); a scale over the whole split
(normalize.mode=shared, pca_rgb's shared basis) is fitted part by part, then drawn in a second
launch (featvis.pipeline.fits).

In W&B each shard is a run of its own, in the sweep's group, with the job's name (without
`shard=`) as its job type, so the shards of a job are one unit there; the sweep's summary run
holds the merged numbers.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from featvis.errors import ConfigError

SHARD = "shard"
SHARDS = "shards"
MULTIRUN_FLAGS = ("-m", "--multirun")
_SHARDS_ARG = re.compile(r"^\+{0,2}shards=(\d+)$")
_SHARD_ARG = re.compile(r"^\+{0,2}shard=")


def expand(argv: List[str]) -> List[str]:
    """`-m shards=N` -> also `shard=range(0,N)`, unless the command line sweeps `shard` itself."""
    if not any(a in MULTIRUN_FLAGS for a in argv) or any(_SHARD_ARG.match(a) for a in argv):
        return argv
    counts = [int(m.group(1)) for m in map(_SHARDS_ARG.match, argv) if m]
    if not counts or counts[-1] < 2:
        return argv
    return [*argv, f"{SHARD}=range(0,{counts[-1]})"]


def check(config: Any, multirun: bool) -> None:
    """One line when `shards` cannot work for this job: a single run, or a sweeper that set no shard."""
    if config.shards <= 1:
        return
    if not multirun:
        raise ConfigError(f"shards={config.shards} splits each job of a sweep into {config.shards} jobs, each "
                          f"drawing a slice of the images: run it as a sweep, python run.py -m shards={config.shards} "
                          "... (the summary merges them); a single run draws every image itself")
    if config.shard is None:
        raise ConfigError(f"shards={config.shards} but no shard: `-m shards=N` adds shard=range(0,N) for Hydra's "
                          f"own sweeper; with another sweeper, sweep shard over 0..{config.shards - 1} yourself")


def part(count: int, shard: int, shards: int) -> Tuple[int, int]:
    """[start, stop) of shard `shard` of `count` items: contiguous slices, their sizes differ by at most 1."""
    base, extra = divmod(count, shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def unit_overrides(overrides: Sequence[str]) -> List[str]:
    """The job's overrides without its `shard=...`: what its shards have in common."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != SHARD]


def unit_name(name: str) -> str:
    """`layers=decoder,shard=2` -> `layers=decoder` (the name of the job the shard belongs to)."""
    kept = [p for p in name.split(",") if not p.startswith(f"{SHARD}=")]
    return ",".join(kept) or name


JOBLIB = "JoblibLauncher"
SUBMITIT_LOCAL = "submitit_launcher.LocalLauncher"


def running_at_once(launcher: str, n_jobs: Optional[int], planned: Optional[int], cpus: int) -> int:
    """How many of the sweep's jobs its launcher runs at once on one machine.

    joblib: n_jobs of them (-1: one per core, -2: all cores but one, as joblib counts); submitit's
    local launcher: every job of the array; the basic launcher one after another; Slurm and Ray
    give each job an allocation of its own (its affinity says its cores). Never more than the
    sweep's jobs (`planned`, when known).
    """
    if launcher.endswith(JOBLIB):
        n = n_jobs if n_jobs is not None and n_jobs > 0 else max(1, cpus + 1 + (n_jobs if n_jobs else -1))
    elif launcher.endswith(SUBMITIT_LOCAL):
        n = planned or 1
    else:
        n = 1
    return max(1, min(n, planned) if planned else n)


def threads(cpus: int, running: int) -> int:
    """CPU threads for one job when `running` jobs share `cpus` cores of one machine."""
    return max(1, cpus // max(1, running))


def machine_cpus() -> int:
    """The cores this process may run on (its affinity: a Slurm task's allocation, taskset, a cgroup's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def merge(records: Sequence[Any]) -> List[Any]:
    """The sweep's jobs with each sharded job's shard records merged into one record, in job order.

    `records`: featvis.sweep.results.JobRecord's, as load_results reads them. The merged record's
    folder is its first shard's; `parts` lists every shard's folder, and its picture files are
    given by absolute path.
    """
    units: Dict[Tuple[Tuple[str, ...], int], List[Any]] = {}
    order: List[Any] = []
    for record in records:
        if record.shard is None or record.shards <= 1:
            order.append(record)
            continue
        key = (tuple(unit_overrides(record.overrides)), record.shards)
        if key not in units:
            units[key] = []
            order.append(key)
        units[key].append(record)
    return [_merged(units[item]) if isinstance(item, tuple) else item for item in order]


def _merged(parts: List[Any]) -> Any:
    by_shard: Dict[int, Any] = {}
    for record in parts:  # a shard run twice (a re-launched sweep): its latest record
        by_shard[int(record.shard)] = record
    shards = parts[0].shards
    done = [by_shard[i] for i in sorted(by_shard)]
    first = done[0]
    failed = [r for r in done if r.status == "failed"]
    stopped = [r for r in done if r.status == "interrupted"]
    skipped = [r for r in done if r.status == "skipped-images"]
    fitted = [r for r in done if r.status == "fitted"]  # featvis.pipeline.fits: launch the same sweep again
    missing = [i for i in range(shards) if i not in by_shard]
    status, error = "ok", None
    if failed or stopped:
        bad = (failed or stopped)[0]
        status, error = ("failed" if failed else "interrupted"), f"shard {bad.shard} of {shards}: {bad.error}"
    elif missing:
        status = "incomplete"
        error = f"{len(missing)} of {shards} shards have not finished (shard {', '.join(map(str, missing[:5]))})"
    elif fitted:
        status = "incomplete"
        error = (f"{len(fitted)} of {shards} shards fitted their part of the colour scale and drew nothing yet: "
                 "launch the same sweep again into its folder to draw them")
    elif skipped:
        status, error = "skipped-images", f"shard {skipped[0].shard} of {shards}: {skipped[0].error}"
    images: List[str] = []
    panels: Dict[str, List[str]] = {}
    files: Optional[Dict[str, Dict[str, str]]] = {} if all(r.panel_files is not None for r in done) else None
    labels: Dict[str, str] = {}
    for record in done:
        images += [s for s in record.images if s not in panels]
        for stem, names in record.panels.items():
            panels.setdefault(stem, list(names))
        if files is not None:
            for stem, named in (record.panel_files or {}).items():
                files.setdefault(stem, {k: str(record.dir / v) for k, v in named.items()})
        labels.update(record.labels)
    return replace(first, name=unit_name(first.name), status=status, error=error,
                   exit_code=max(r.exit_code for r in done), overrides=unit_overrides(first.overrides),
                   images=images, panels=panels, panel_files=files, labels=labels,
                   forwards=_total(r.forwards for r in done), reused=_total(r.reused for r in done),
                   shard=None, parts=[r.dir for r in done])


def _total(values: Any) -> Optional[int]:
    found = [v for v in values if v is not None]
    return sum(found) if found else None
