"""What a job knows about itself: where to write, and how its W&B run is named.

Read from Hydra's runtime config when running under Hydra, so that job configs need no
`${hydra:...}` interpolations and tests can compose configs without a HydraConfig.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

MAX_NAME = 128  # W&B's limit for run names
SHARD = "shard"  # a shard job's override (featvis.sweep.shards)
# keys that change where results go or how fast, not what they show
PLUMBING = {"backends", "wandb", "device", "share_forward", "threads"}


@dataclass
class JobInfo:
    output_dir: Path
    overrides: List[str] = field(default_factory=list)  # the job's command-line overrides
    sweep_dir: Optional[Path] = None  # set for multirun jobs
    swept: List[str] = field(default_factory=list)  # the keys the sweep varies
    choices: dict = field(default_factory=dict)  # config group -> option, e.g. {"model": "demo"}
    num: Optional[int] = None  # Hydra's job number in a multirun
    launcher: str = ""  # the multirun launcher's class (hydra.launcher._target_); "" for a single run
    launcher_jobs: Optional[int] = None  # its n_jobs (joblib), as configured

    def _shown(self) -> List[str]:
        """The overrides that tell this job from the others: the swept ones, else all but plumbing."""
        keys = [(_key(o), o) for o in self.overrides]
        if self.swept:
            return [o for k, o in keys if k in self.swept]
        return [o for k, o in keys if k.split(".")[0] not in PLUMBING]

    @property
    def name(self) -> str:
        """`layers=decoder`: the job's distinguishing overrides, paths shortened to file names."""
        shown = ",".join(sorted(_shorten(o) for o in self._shown()))
        if not shown:
            shown = "-".join(str(self.choices[k]) for k in ("model", "layers", "reduction") if k in self.choices)
        return (shown or "featvis")[:MAX_NAME]

    @property
    def job_type(self) -> str:
        """The swept keys (`layers`): shared by the jobs of a sweep, to compare them. A shard's: its job's name
        without `shard=` (featvis.sweep.shards), shared by the job's shards, one unit in W&B."""
        if any(_key(o) == SHARD for o in self.overrides):
            shown = [_shorten(o) for o in self._shown() if _key(o) != SHARD]
            return (",".join(sorted(shown)) or "default")[:64]
        return (",".join(sorted({_key(o) for o in self._shown()})) or "default")[:64]

    @property
    def group(self) -> Optional[str]:
        """One group per multirun sweep, named after its folder; None for a single run."""
        if self.sweep_dir is None:
            return None
        parts = [p for p in self.sweep_dir.parts if p not in ("/", ".")][-3:]
        return "sweep-" + "-".join(parts)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _shorten(override: str) -> str:
    """`image='/data/x.png'` -> `image=x.png`: quotes Hydra keeps off, paths cut to file names."""
    key, _, value = override.partition("=")
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return f"{key}={os.path.basename(value)}" if "/" in value and not value.startswith("[") else f"{key}={value}"


def swept_keys(sweep_dir: Path) -> List[str]:
    """The keys a multirun sweeps over, from the multirun.yaml Hydra writes when a sweep starts."""

    try:
        task = OmegaConf.to_container(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task,
                                      resolve=False)  # values may hold `${...}`
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # another sweeper, or no file: fall back to all overrides
        return []
    return [o.key_or_group.lstrip("+~") for o in parsed if o.is_sweep_override()]


def from_hydra() -> JobInfo:
    """The running Hydra job's info (requires a job started by @hydra.main)."""

    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=OmegaConf.to_container(hc.overrides.task, resolve=False),  # values may hold `${...}`
        sweep_dir=sweep_dir,
        swept=swept_keys(sweep_dir) if sweep_dir else [],
        choices={k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
        num=int(hc.job.num) if sweep_dir is not None and OmegaConf.select(hc, "job.num") is not None else None,
        launcher=str(OmegaConf.select(hc, "launcher._target_", default="") or "") if sweep_dir is not None else "",
        launcher_jobs=_int_or_none(OmegaConf.select(hc, "launcher.n_jobs", default=None)),
    )


def _int_or_none(value: object) -> Optional[int]:
    try:
        return None if value is None else int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
