"""What a job knows about itself: where to write, and how its W&B run is named.

Read from Hydra's runtime config when running under Hydra, so that job configs need no
`${hydra:...}` interpolations and tests can compose configs without a HydraConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

MAX_NAME = 128  # W&B's limit for run names


@dataclass
class JobInfo:
    output_dir: Path
    overrides: List[str] = field(default_factory=list)  # the job's command-line overrides
    sweep_dir: Optional[Path] = None  # set for multirun jobs
    job_num: int = 0
    choices: dict = field(default_factory=dict)  # config group -> option, e.g. {"model": "demo"}

    @property
    def name(self) -> str:
        """`layers=decoder,model=ann`: the overrides, so sweep jobs get distinct, readable names."""
        if self.overrides:
            name = ",".join(sorted(self.overrides))
        else:
            name = "-".join(str(self.choices[k]) for k in ("model", "layers", "reduction") if k in self.choices)
        return (name or "featvis")[:MAX_NAME]

    @property
    def job_type(self) -> str:
        """The overridden keys (`layers`), shared by the jobs of a sweep over those keys."""
        keys = sorted({o.split("=", 1)[0].lstrip("+~") for o in self.overrides})
        return (",".join(keys) or "default")[:64]

    @property
    def group(self) -> Optional[str]:
        """One group per multirun sweep, named after its folder; None for a single run."""
        if self.sweep_dir is None:
            return None
        parts = [p for p in self.sweep_dir.parts if p not in ("/", ".")][-3:]
        return "sweep-" + "-".join(parts)


def from_hydra() -> JobInfo:
    """The running Hydra job's info (requires a job started by @hydra.main)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        sweep_dir=Path(hc.sweep.dir) if multirun else None,
        job_num=hc.job.num if multirun else 0,
        choices={k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
    )
