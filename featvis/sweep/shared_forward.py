"""Forward passes shared by the jobs of a sweep: the model runs once per (checkpoint, image).

A job in a planned group (featvis.sweep.plan) records the union of its group's layers;
each image's prediction and reduced maps are kept in this process for the group's
other jobs, which take their layers from there instead of running the model again.
Under Hydra's basic launcher every job of a sweep runs in this process; joblib and Ray
workers share with the jobs they happen to run.

The kept forwards live in featvis.engine.forward_cache (the engine's, which knows no
sweep); this module says which jobs share them. A group that keeps sketches says so in its
key (featvis.sweep.plan.share_key), so a job that takes a kept forward finds the sketch it
needs, at its own positions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from featvis.engine.forward_cache import Sharing, capacity_bytes, clear, held_bytes  # noqa: F401 (tests' names)
from featvis.errors import LayerNotFoundError
from featvis.model.load import LoadedModel
from featvis.record import presets
from featvis.record.layers import Selected
from featvis.sweep.plan import group_of

log = logging.getLogger(__name__)


def for_job(cfg: Any, sweep_dir: Optional[Path], loaded: LoadedModel, own: Sequence[Selected]) -> Optional[Sharing]:
    """This job's Sharing when its sweep's plan puts it in a group of several jobs, else None."""
    group = group_of(cfg, sweep_dir)
    if group is None:
        return None
    extra = _select_extra(loaded.model, group["layers"], own, cfg.model.layer_presets)
    log.info("sweep: %d jobs share the forward passes of this model and reduction (%d layers in all)",
             group["jobs"], len(own) + len(extra))
    return Sharing(loaded, group["key"], own, extra, group["jobs"])


def _select_extra(model: nn.Module, specs: Sequence[str], own: Sequence[Selected],
                  refined: Mapping[str, Sequence[str]]) -> List[Selected]:
    """The layers of `specs` (or `preset:<name>`) this job does not record itself; a spec that fails
    is its own job's error."""
    mine = {(layer.module_name, layer.port, layer.pick) for layer in own}
    extra: Dict[Tuple, Selected] = {}
    for spec in specs:
        try:
            selected = presets.select(model, [spec], refined)
        except LayerNotFoundError:
            continue
        for layer in selected:
            if (layer.module_name, layer.port, layer.pick) not in mine:
                extra.setdefault((layer.module_name, layer.port, layer.pick), layer)
    return list(extra.values())
