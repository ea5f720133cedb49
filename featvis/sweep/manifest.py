"""A sweep folder holds one sweep, and knows its jobs: `<sweep dir>/featvis_sweep.json` and `featvis_jobs/`.

Before this file, the summary read every `featvis_result.json` below the sweep folder: a
one-job sweep into a folder holding an older sweep said "13 jobs" and showed the old
pictures, and `hydra.sweep.dir=/` walked the whole file system. Now:

- `start(sweep_dir, config)` (featvis.sweep.callbacks.OutputLock, when a multirun starts, before
  Hydra writes anything there) refuses a folder that holds anything already, and writes the
  manifest: a new id for the sweep, and each job's overrides when the sweeper's expansion is
  known (Hydra's basic sweeper, featvis.sweep.plan.sweep_overrides);
- `register(...)` (featvis.cli.job, each job as it starts, in whatever process the launcher
  runs it) writes `featvis_jobs/<num>.json`: where the job's folder is;
- `job_dirs(sweep_dir)` is what the summary reads: the registered folders, each result file
  accepted only when it carries this sweep's id. No search below the folder. A folder written
  before manifests existed is read one level deep (`<sweep>/<job>/featvis_result.json`);
- `interrupted(...)` notes, when Ctrl-C or a signal stops the sweep, after which job; the summary
  then says so and lists the jobs that never ran (`never_ran`);
- `resume(...)`: the same sweep (the same job list) launched again into its folder finishes it:
  its jobs that ended ok are kept and not run again (featvis.cli), the others run anew.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from featvis.errors import ConfigError
from featvis.io import write_atomic

MANIFEST = "featvis_sweep.json"
JOBS = "featvis_jobs"
OWN_FILES = frozenset({".featvis.lock"})  # what the folder may hold when a sweep starts (the lock just taken)


@dataclass
class Manifest:
    id: str
    started: float
    jobs: Optional[List[List[str]]] = None  # each job's overrides, in job order; None: the sweeper's own
    interrupted: Optional[Dict[str, Any]] = None  # {"how": "interrupted", "after": jobs that had started}
    launches: int = 1  # how many times the sweep was launched into its folder (resume: the same jobs again)

    @property
    def planned(self) -> Optional[int]:
        return None if self.jobs is None else len(self.jobs)


def refuse_used(sweep_dir: Path, key: str) -> None:
    """ConfigError when `sweep_dir` holds anything: a sweep folder holds one sweep's jobs and summary."""
    try:
        entries = sorted(e.name for e in os.scandir(sweep_dir) if e.name not in OWN_FILES)
    except FileNotFoundError:
        return
    except NotADirectoryError as err:
        raise ConfigError(f"{key}={sweep_dir} is a file, not a folder: pass a new folder") from err
    if not entries:
        return
    what = "an earlier sweep" if MANIFEST in entries or "multirun.yaml" in entries else f"{len(entries)} entries"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise ConfigError(f"{key}={sweep_dir} already holds {what} ({shown}): a sweep folder holds one sweep, whose "
                      f"summary reads its own jobs only; pass a new folder (the default makes one per sweep) "
                      "or remove what is there")


def same_sweep(sweep_dir: Path, jobs: Optional[List[List[str]]]) -> bool:
    """Whether `sweep_dir` holds a sweep with this job list (known: Hydra's basic sweeper)."""
    old = read(sweep_dir)
    return (old is not None and jobs is not None and old.jobs is not None
            and [list(j) for j in old.jobs] == [list(j) for j in jobs])


def resume(sweep_dir: Path, jobs: Optional[List[List[str]]]) -> Optional[Manifest]:
    """The manifest of the same sweep launched into `sweep_dir` before (the same jobs, in the same order),
    marked as launched again; None when the folder holds no such sweep (then `refuse_used` decides).

    Only a sweep whose job list is known (Hydra's basic sweeper) can be recognised: with another
    sweeper a folder in use is refused as before.
    """
    if not same_sweep(sweep_dir, jobs):
        return None
    old = read(sweep_dir)
    assert old is not None
    old.interrupted = None
    old.launches += 1
    write(sweep_dir, old)
    return old


def start(sweep_dir: Path, jobs: Optional[List[List[str]]]) -> Manifest:
    """The manifest of the sweep that starts now in `sweep_dir` (refused if the folder is in use)."""
    manifest = Manifest(id=uuid.uuid4().hex, started=time.time(), jobs=jobs)
    write(sweep_dir, manifest)
    return manifest


def write(sweep_dir: Path, manifest: Manifest) -> None:
    write_atomic(Path(sweep_dir) / MANIFEST, json.dumps(asdict(manifest), indent=1))


def read(sweep_dir: Path) -> Optional[Manifest]:
    """The sweep's manifest; None for a folder without one (written before featvis kept manifests)."""
    try:
        data = json.loads((Path(sweep_dir) / MANIFEST).read_text())
        return Manifest(id=str(data["id"]), started=float(data.get("started") or 0.0), jobs=data.get("jobs"),
                        interrupted=data.get("interrupted"), launches=int(data.get("launches") or 1))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def register(sweep_dir: Path, num: int, job_dir: Path, overrides: List[str]) -> None:
    """Note that job `num` of the sweep runs in `job_dir` (one file per job: parallel launchers never collide)."""
    entry = {"num": num, "dir": os.path.relpath(job_dir, sweep_dir), "overrides": list(overrides)}
    write_atomic(Path(sweep_dir) / JOBS / f"{num}.json", json.dumps(entry))


def job_dirs(sweep_dir: Path) -> List[Tuple[Optional[int], Path]]:
    """(num, folder) of every job this sweep started, in job order; folders outside the sweep are ignored."""
    sweep_dir = Path(sweep_dir)
    registry = sweep_dir / JOBS
    if not registry.is_dir():  # a sweep from before manifests: its job folders, one level down
        return [(None, p) for p in sorted(sweep_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    found: Dict[int, Path] = {}
    for entry in registry.glob("*.json"):
        try:
            data = json.loads(entry.read_text())
            num, folder = int(data["num"]), (sweep_dir / str(data["dir"])).resolve()
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written
        if folder == sweep_dir.resolve() or sweep_dir.resolve() not in folder.parents:
            continue
        found[num] = folder
    return sorted(found.items())


def interrupted(sweep_dir: Path, how: str) -> Optional[Manifest]:
    """Note in the manifest that the sweep was stopped (`how`: "interrupted", "terminated (SIGTERM)")."""
    manifest = read(sweep_dir)
    if manifest is None:
        return None
    manifest.interrupted = {"how": how, "after": len(job_dirs(sweep_dir))}
    write(sweep_dir, manifest)
    return manifest


@dataclass
class Progress:
    """What the summary says of the sweep as a whole."""

    planned: Optional[int] = None  # jobs the sweeper makes; None: unknown (another sweeper)
    never_ran: List[Dict[str, Any]] = field(default_factory=list)  # {"num", "name", "overrides"}: jobs not started
    interrupted: Optional[Dict[str, Any]] = None

    def line(self) -> Optional[str]:
        """`interrupted after job 4 of 12: 8 jobs never ran`, or None for a sweep that was not stopped."""
        if not self.interrupted:
            return None
        of = f" of {self.planned}" if self.planned is not None else ""
        never = f": {len(self.never_ran)} job(s) never ran" if self.never_ran else ""
        return f"{self.interrupted['how']} after job {self.interrupted['after']}{of}{never}"

    def to_json(self) -> Dict[str, Any]:
        return {"planned": self.planned, "never_ran": self.never_ran, "interrupted": self.interrupted,
                "stopped": self.line()}


def progress(sweep_dir: Path, started: List[Optional[int]]) -> Progress:
    """The sweep's plan against the jobs that started (their numbers)."""
    manifest = read(sweep_dir)
    if manifest is None:
        return Progress()
    ran = set(started)
    jobs = manifest.jobs or []
    differ = _swept(jobs)
    never = [{"num": i, "name": ",".join(o for o in overrides if o in differ) or ",".join(overrides),
              "overrides": list(overrides)} for i, overrides in enumerate(jobs) if i not in ran]
    stopped = manifest.interrupted is not None
    return Progress(planned=manifest.planned, never_ran=never if stopped else [], interrupted=manifest.interrupted)


def _swept(jobs: List[List[str]]) -> set:
    """The overrides that tell the planned jobs apart (those not given to every job)."""
    if len(jobs) < 2:
        return set()
    common = set(jobs[0]).intersection(*map(set, jobs[1:]))
    return {o for overrides in jobs for o in overrides if o not in common}
