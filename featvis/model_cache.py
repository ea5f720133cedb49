"""Loaded models, kept for the next job in the same process.

Under Hydra's basic launcher every job of a sweep runs in one process, and the joblib
and Ray launchers reuse their workers: a sweep over layers, reductions or images would
otherwise load the same checkpoint once per job. Models are keyed by what makes them
differ (config file, checkpoint file, device, trust), with the files' size and mtime so
that an edited file is loaded again. At most FEATVIS_MODEL_CACHE models (default 2) are
kept, least recently used first out. Jobs leave nothing on a cached model: their hooks
are removed on every exit path and no gradient is kept.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Tuple

from featvis.checkpoints import resolve_checkpoint
from featvis.model_loader import LoadedModel, load_model, resolve_device
from featvis.paths import resolve_model_config

log = logging.getLogger(__name__)

_MODELS: "OrderedDict[Tuple, LoadedModel]" = OrderedDict()


def capacity() -> int:
    return max(0, int(os.environ.get("FEATVIS_MODEL_CACHE", "2")))


def _stamp(path: Optional[str]) -> Optional[Tuple[str, int, int]]:
    if path is None:
        return None
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def load(config: str, checkpoint: Optional[str], device: str = "auto", *,
         trust_checkpoint: bool = False) -> LoadedModel:
    """`model_loader.load_model`, or the model an earlier job of this process loaded."""
    local = resolve_checkpoint(checkpoint)  # a URL is downloaded (once) here
    key = (_stamp(str(resolve_model_config(config))), _stamp(local), resolve_device(device), trust_checkpoint)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        log.info("model reused from an earlier job of this process (%s, %s)", config, checkpoint)
        return _MODELS[key]
    loaded = load_model(config, local, device, trust_checkpoint=trust_checkpoint)
    if capacity():
        _MODELS[key] = loaded
        while len(_MODELS) > capacity():
            _MODELS.popitem(last=False)
    return loaded


def clear() -> None:
    _MODELS.clear()
