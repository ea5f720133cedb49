"""What a multirun sweep will ask of each model, known before its first job runs.

Jobs that run the same model (config, checkpoint, device) with the same reduction
compute the same reduced map of a layer for an image, whatever else they differ in
(layers, colour scales, backends). When a sweep starts, `write_plan` expands its
overrides the way Hydra's basic sweeper does, composes every job's config and groups
the jobs by `share_key`; `<sweep dir>/featvis_plan.json` then holds, per group, the
union of the layers its jobs ask for and how many jobs there are. A job of a group
records the whole union in its forward pass, so the group's other jobs find their maps
made (featvis.shared_forward) instead of running the model again.

Only Hydra's basic launcher gets a plan: it runs the jobs one after the other in one
process, where the kept maps are. Parallel launchers (joblib, submitit, Ray) run jobs at
the same time in workers that Hydra picks, so a kept forward would mostly wait in a
worker no other job of its group reaches; there every job runs its own forward passes.
The plan is an optimisation only: without it (another sweeper or launcher, a config
without featvis's callback, too many jobs to compose) every job records its own layers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

PLAN_FILE = "featvis_plan.json"
MAX_JOBS = 512  # composing a job's config takes ~0.1 s: beyond this many, jobs run unplanned
RENDER_ONLY = {"arrangement"}  # reduction options that change the picture, not the reduced maps
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def share_key(cfg: DictConfig) -> Optional[str]:
    """Jobs with the same key record identical maps of a layer for an image; None: never shared.

    Grad-CAM (its own forward and backward) and pca_rgb with a shared basis (a basis
    fitted over the job's own images and layers) are not shared.
    """
    from featvis.reductions import GRADIENT_REDUCTIONS

    red = cfg.reduction
    if cfg.mode != "run" or not cfg.share_forward or red.name in GRADIENT_REDUCTIONS or (
            red.name == "pca_rgb" and red.shared_basis):
        return None
    what = {
        "config": cfg.model.config, "checkpoint": cfg.model.checkpoint,
        "trust_checkpoint": cfg.model.trust_checkpoint, "device": cfg.device,
        "reduction": {k: v for k, v in OmegaConf.to_container(red, resolve=True).items() if k not in RENDER_ONLY},
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_plan(job_configs: Iterable[DictConfig]) -> Dict[str, Dict[str, Any]]:
    """{share key: {"layers": union of the jobs' layer specs in first-seen order, "jobs": how many}}."""
    groups: Dict[str, Dict[str, Any]] = {}
    for cfg in job_configs:
        key = share_key(cfg)
        if key is None:
            continue
        group = groups.setdefault(key, {"layers": [], "jobs": 0, "model": cfg.model.name,
                                        "checkpoint": cfg.model.checkpoint, "reduction": cfg.reduction.name})
        group["jobs"] += 1
        group["layers"] += [spec for spec in cfg.layers.names if spec not in group["layers"]]
    return groups


def sweep_overrides(config: DictConfig) -> Optional[List[List[str]]]:
    """Each job's overrides, as Hydra's basic sweeper makes them; None for another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default=BASIC_SWEEPER)
    if sweeper != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    task = [f"{k}={v}" for k, v in params.items()]  # the sweeper's own params come first, as in Hydra
    task += OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create().parse_overrides(task)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def write_plan(sweep_dir: Path, config: DictConfig) -> Optional[Path]:
    """Compose every job of the sweep that starts now (Hydra's config loader) and write its plan."""
    from hydra.core.global_hydra import GlobalHydra

    path = Path(sweep_dir) / PLAN_FILE
    path.unlink(missing_ok=True)  # an earlier sweep's, in the same folder: never this sweep's plan
    if OmegaConf.select(config, "hydra.launcher._target_", default=BASIC_LAUNCHER) != BASIC_LAUNCHER:
        return None
    jobs = sweep_overrides(config)
    if jobs is None or len(jobs) > MAX_JOBS or not GlobalHydra.instance().is_initialized():
        return None
    loader = GlobalHydra.instance().config_loader()
    configs = []
    for overrides in jobs:
        try:
            job_cfg = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        except Exception as err:  # this job fails on its own, with its own error
            log.debug("sweep plan: job %s not planned: %s", overrides, err)
            continue
        with open_dict(job_cfg):
            del job_cfg["hydra"]
        configs.append(job_cfg)
    plan = _safe_plan(configs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"groups": plan}, indent=1))
    tmp.replace(path)
    return path


def _safe_plan(configs: List[DictConfig]) -> Dict[str, Dict[str, Any]]:
    """make_plan over the configs that are valid; a broken one is its own job's error to report."""
    ok = []
    for cfg in configs:
        try:
            share_key(cfg)
            list(cfg.layers.names)
            ok.append(cfg)
        except Exception as err:
            log.debug("sweep plan: a job config is not planned: %s", err)
    return make_plan(ok)


def group_of(cfg: DictConfig, sweep_dir: Optional[Path]) -> Optional[Dict[str, Any]]:
    """This job's group in its sweep's plan ({"key", "layers", "jobs"}), or None when it is alone."""
    key = share_key(cfg) if sweep_dir is not None else None
    if key is None:
        return None
    try:
        group = json.loads((Path(sweep_dir) / PLAN_FILE).read_text())["groups"].get(key)
    except (OSError, ValueError, KeyError, AttributeError):
        return None  # no plan: another sweeper, or a sweep started without featvis's callback
    if not group or group.get("jobs", 0) < 2:
        return None
    return {"key": key, "layers": list(group["layers"]), "jobs": int(group["jobs"])}



from hydra.experimental.callback import Callback  # hydra-core 1.3 has it: a hard dependency


class SweepPlan(Callback):
    """Hydra callback (conf/config.yaml, `hydra.callbacks`): write the plan when a multirun starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path = write_plan(Path(config.hydra.sweep.dir), config)
        except Exception as err:  # the plan saves time; it must never stop a sweep
            log.warning("featvis: no sweep plan, each job runs its own forward passes: %s", err)
            return
        if path is not None:
            log.info("featvis sweep plan: %s", path)
