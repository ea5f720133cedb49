"""Everything a config makes featvis (or Hydra) write lands inside the job's output folder.

A shared preset may set where Hydra writes: a log handler's file, `hydra.output_subdir`
(config.yaml, hydra.yaml, overrides.yaml), `hydra.sweep.subdir` (each job's folder in the
sweep folder). Measured before this module: a preset's `RotatingFileHandler` on a file
outside with `maxBytes: 1` destroyed that file's contents; `hydra.output_subdir: /abs`
wrote Hydra's three files there. featvis.config.data_only refuses handler classes that
reach a socket, a queue, mail or HTTP, and an absolute or `..` output_subdir; this module
checks what only resolving tells:

- `check_composed(cfg)` (featvis.config.data_only, on every composed config): a job's
  folder, `hydra.sweep.dir/hydra.sweep.subdir` resolved as Hydra will (with the job's
  number, which Hydra sets after composing), must be inside the sweep folder;
- `install()` wraps the function Hydra calls to configure a job's logging (hydra.core.utils
  `configure_log`, called by `run_job` once the job's folder is known and before it opens
  any handler): every handler's file, resolved, must be inside `hydra.runtime.output_dir`.

Each refusal is a ConfigError naming the key, the path and the folder. The paths featvis
itself writes (a backend's `save_dir`) are checked where they are used
(featvis.backends.visualizer).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Optional

import hydra.core.utils
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from featvis.errors import ConfigError

_original: Optional[Callable[..., Any]] = None


def inside(path: str, folder: str) -> bool:
    """Whether `path` (made absolute against the working directory, links followed) is `folder` or below it."""
    real, root = os.path.realpath(os.path.abspath(path)), os.path.realpath(os.path.abspath(folder))
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_composed(cfg: Any) -> None:
    """ConfigError when the job folder `hydra.sweep.subdir` makes is outside `hydra.sweep.dir`."""
    if not isinstance(cfg, DictConfig) or OmegaConf.select(cfg, "hydra.sweep", default=None) is None:
        return
    probe = copy.deepcopy(cfg)
    with open_dict(probe):  # what Hydra's launcher sets after composing; subdir is ${hydra.job.num} by default
        if OmegaConf.is_missing(probe.hydra.job, "num"):
            probe.hydra.job.num = 0
        if OmegaConf.is_missing(probe.hydra.job, "id"):
            probe.hydra.job.id = "0"
    try:
        sweep_dir = str(OmegaConf.select(probe, "hydra.sweep.dir", throw_on_missing=True))
        subdir = OmegaConf.select(probe, "hydra.sweep.subdir", throw_on_missing=True)
    except OmegaConfBaseException:
        return  # resolves only later (a launcher's own keys): Hydra reports what it cannot resolve
    if subdir is None:
        return
    job_dir = os.path.join(sweep_dir, str(subdir))
    if not inside(job_dir, sweep_dir) or os.path.realpath(job_dir) == os.path.realpath(sweep_dir):
        raise ConfigError(f"hydra.sweep.subdir={str(subdir)!r} puts a job's folder at {job_dir}, not inside "
                          f"the sweep folder {sweep_dir}: a sweep's jobs write only inside it; use a relative "
                          "folder name such as ${hydra.job.num}")


def install() -> None:
    """Check every job's log files when Hydra opens them (idempotent)."""
    global _original
    if _original is not None:
        return
    configure = hydra.core.utils.configure_log
    _original = configure

    def configure_log(log_config: Any, *args: Any, **kwargs: Any) -> None:
        check_log_files(log_config)
        configure(log_config, *args, **kwargs)

    hydra.core.utils.configure_log = configure_log  # run_job calls it by this module-level name


def uninstall() -> None:
    """Give Hydra its own function back (tests)."""
    global _original
    if _original is not None:
        hydra.core.utils.configure_log = _original
        _original = None


def check_log_files(log_config: Any) -> None:
    """ConfigError unless every handler file of the job's logging config is inside the job's output folder."""
    if log_config is None:
        return
    try:
        output_dir = HydraConfig.get().runtime.output_dir
    except (ValueError, OmegaConfBaseException):  # no job: Hydra's own logging, which may not name files
        return
    resolved = OmegaConf.to_container(log_config, resolve=True) if OmegaConf.is_config(log_config) else log_config
    for name, handler in ((resolved or {}).get("handlers") or {}).items():
        filename = handler.get("filename") if isinstance(handler, dict) else None
        if filename is not None and not inside(str(filename), str(output_dir)):
            raise ConfigError(f"hydra.job_logging.handlers.{name}.filename={str(filename)!r} is outside the job's "
                              f"output folder {output_dir}: featvis writes only inside it; name a file such as "
                              "${hydra.runtime.output_dir}/${hydra.job.name}.log")
