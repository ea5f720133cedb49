"""What a multirun sweep will ask of each model, known before its first job runs.

Jobs that run the same model (config, checkpoint, device, model.cfg_options and model.scale)
with the same reduction compute the same reduced map of a layer for an image, whatever else they differ in
(layers, colour scales, backends). When a sweep starts, `write_plan` expands its
overrides the way Hydra's basic sweeper does, composes every job's config and groups
the jobs by `share_key`; `<sweep dir>/featvis_plan.json` then holds, per group, the
union of the layers its jobs ask for and how many jobs there are. A job of a group
records the whole union in its forward pass, so the group's other jobs find their maps
made (featvis.sweep.shared_forward) instead of running the model again.

Only Hydra's basic launcher gets a plan: it runs the jobs one after the other in one
process, where the kept maps are. Parallel launchers (joblib, submitit, Ray) run jobs at
the same time in workers that Hydra picks, so a kept forward would mostly wait in a
worker no other job of its group reaches; there every job runs its own forward passes.
The plan is an optimisation only: without it (another sweeper or launcher, a config
without featvis's callback, too many jobs to compose) every job records its own layers.
The Hydra callback that writes the plan is featvis.sweep.callbacks.SweepPlan.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

# Hydra's private API, on purpose: the plan must expand a sweep exactly as the basic sweeper
# will (`split_arguments`), and know its and the basic launcher's class paths; Hydra has no
# public function for that. tests/test_sweeps.py pins both: a Hydra that moves them fails there.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from featvis.config.schema import AUTO
from featvis.data import mmseg_config as model_options
from featvis.data.paths import checkpoint_for
from featvis.errors import ConfigError
from featvis.io import write_atomic
from featvis.record import presets
from featvis.reduce import registry as reductions
from featvis.sweep import manifest

log = logging.getLogger(__name__)

PLAN_FILE = "featvis_plan.json"
MAX_JOBS = 512  # composing a job's config takes ~0.1 s: beyond this many, jobs run unplanned
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # private API: see the imports
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def share_key(cfg: DictConfig) -> Optional[str]:
    """Jobs with the same key record identical maps of a layer for an image; None: never shared.

    The reduction says whether it `shares_forward` (not Grad-CAM, which runs the model
    itself, nor pca_rgb with a shared basis, fitted over the job's own images and layers)
    and which of its options are `render_only` (topk's arrangement), left out of the key.
    An unknown reduction is not shared: its job fails on its own. The compare sketch is
    part of what is recorded (`_sketch_key`): jobs that keep sketches share only with jobs
    that keep them at the same positions, and jobs that keep none only with each other.
    """
    red = cfg.reduction
    reduction = reductions.find(red.name)
    if cfg.mode != "run" or not cfg.share_forward or reduction is None or not reduction.shares_forward(red):
        return None
    options = OmegaConf.to_container(OmegaConf.structured(red), resolve=True)  # a DictConfig or a dataclass
    what = {
        "config": cfg.model.config, "checkpoint": _checkpoint(cfg.model),
        "trust_checkpoint": cfg.model.trust_checkpoint, "device": cfg.device,
        # another mmseg config, or another test resize: another model, other maps
        "cfg_options": model_options.canonical(cfg.model.cfg_options), "scale": model_options.plain(cfg.model.scale),
        "reduction": {k: v for k, v in options.items() if k not in reduction.render_only},
        "sketch": _sketch_key(getattr(cfg, "compare", None)),
        # shards draw other images: a forward is shared among the jobs of one shard only
        "shard": [getattr(cfg, "shard", None), getattr(cfg, "shards", 1)],
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sketch_key(compare: Any) -> Optional[Dict[str, Any]]:
    """What the job's forward records for compare (featvis.pipeline.sketches.wanted): None = no sketch.

    compare.sketch=null leaves it to the sweep (whether it varies model.checkpoint), the same
    answer for all of a sweep's jobs; so "on", "the sweep decides" and "off" are told apart,
    and the sample's pixels and seed count whenever a sketch may be kept.
    """
    if compare is None or (compare.sketch is False and not compare.layer_similarity):
        return None
    on = True if compare.sketch or compare.layer_similarity else None
    return {"on": on, "pixels": int(compare.pixels), "seed": int(compare.seed)}


def _checkpoint(model: Any) -> Optional[str]:
    """model.checkpoint with `auto` settled, as the job will see it (a composed config still says auto)."""
    try:
        return checkpoint_for(model.config, model.checkpoint)
    except ConfigError:
        return AUTO  # the job fails on its own with this line


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
        wanted = presets.requested(cfg.layers.preset, cfg.layers.names)  # `preset:decoder` for a preset
        group["layers"] += [spec for spec in wanted if spec not in group["layers"]]
    return groups


def sweep_overrides(config: DictConfig) -> Optional[List[List[str]]]:
    """Each job's overrides, as Hydra's basic sweeper makes them; None for another sweeper."""
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
    return write_atomic(path, json.dumps({"groups": plan}, indent=1))


def _safe_plan(configs: List[DictConfig]) -> Dict[str, Dict[str, Any]]:
    """make_plan over the configs that are valid; a broken one is its own job's error to report."""
    ok = []
    for cfg in configs:
        try:
            share_key(cfg)
            presets.requested(cfg.layers.preset, cfg.layers.names)
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


def expected_jobs(sweep_dir: Path) -> Optional[int]:
    """How many jobs the basic sweeper makes of the sweep's overrides (its manifest, else multirun.yaml);
    None if unknown."""
    known = manifest.read(sweep_dir)
    if known is not None and known.planned is not None:
        return known.planned
    try:
        jobs = sweep_overrides(OmegaConf.load(Path(sweep_dir) / "multirun.yaml"))
    except Exception:  # no multirun.yaml (not a Hydra sweep folder), or one Hydra cannot parse
        return None
    return None if jobs is None else len(jobs)
