"""Opening a W&B run the way featvis does, in one place: the vis backend's job runs and the sweep's summary run.

Every run is opened with the same settings (no console capture, system stats, code or
git state: featvis logs pictures, not the process), an explicit mode (wandb reads the
`WANDB_*` variables once per process, and a multirun's jobs share one process),
`reinit="finish_previous"` (a run left open by an earlier job of the process is
finished rather than returned), and `init_timeout`. An online run that cannot be opened
within it (no network, wrong key, server down) is opened offline instead, with a warning:
a job or a summary is never lost to W&B.

wandb prints to stderr (`wandb: [wandb.login()] Loaded credentials ...`) unless its
process-wide settings, fixed by the first `wandb.setup`, say silent: featvis sets them up
silent before its first run and sends wandb's terminal messages to its own log instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """What a W&B run is: where its files go, its project, group, job type, name and config."""

    save_dir: Union[str, Path]
    project: str = "featvis"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    name: Optional[str] = None
    config: Dict[str, Any] = field(default_factory=dict)
    init_timeout: float = 30.0  # seconds wandb.init may take online before featvis falls back to offline


def open_run(spec: RunSpec, mode: str, offline_hint: str = "the job's last log line says how to upload the run"
             ) -> Tuple[Any, str]:
    """(the open wandb run, the mode it was opened in): `mode`, or "offline" when online failed.

    `mode` is an explicit wandb mode (online, offline, disabled): featvis.backends.wandb's
    `resolve_mode` turns featvis's `auto` into one. `offline_hint` ends the fallback warning.
    """
    import wandb  # noqa: PLC0415  (about a second to import: only runs that log to W&B pay it)

    quiet_setup(wandb)
    settings = wandb.Settings(init_timeout=spec.init_timeout, silent=True, console="off",
                              x_disable_stats=True, save_code=False, disable_git=True)
    kwargs = dict(dir=str(spec.save_dir), project=spec.project, entity=spec.entity, group=spec.group,
                  job_type=spec.job_type, name=spec.name, config=spec.config, settings=settings,
                  reinit="finish_previous")
    try:
        return wandb.init(mode=mode, **kwargs), mode
    except Exception as err:  # no network, wrong key, server down: never lose the job
        if mode != "online":
            raise
        log.warning("W&B online init failed within wandb.init_timeout=%ss (%s); logging offline instead: %s",
                    spec.init_timeout, str(err).splitlines()[0] if str(err) else type(err).__name__, offline_hint)
        return wandb.init(mode="offline", **kwargs), "offline"


def quiet_setup(wandb: Any) -> None:
    """wandb's terminal messages into featvis's log (`wandb.setup` fixes them once per process);
    `wandb.setup` also starts wandb's service process, unless W&B is disabled."""
    wandb.setup(settings=wandb.Settings(silent=True))
    wandb.termsetup(wandb.Settings(silent=True), logging.getLogger("featvis.wandb"))
