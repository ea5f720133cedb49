"""Loaded models, kept for the next job in the same process.

Under Hydra's basic launcher every job of a sweep runs in one process, and the joblib
and Ray launchers reuse their workers: a sweep over layers, reductions or images would
otherwise load the same checkpoint once per job. Models are keyed by what makes them
differ (config file, checkpoint file, device, trust, strict, model.cfg_options and
model.scale), with the files' size and mtime so that an edited file is loaded again. At most
FEATVIS_MODEL_CACHE models (default 2) are kept, least recently used first out (cachetools'
LRUCache). Jobs leave nothing on a cached model: their hooks are removed on every exit path and no gradient is kept.
What a model learnt about itself stays with it: the stride a network needs its input padded to
(`stride.py`, set in its data_preprocessor's test_cfg), so the next job does not probe again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

from cachetools import LRUCache

from featvis.data.mmseg_config import Options
from featvis.errors import env_number
from featvis.model.load import LoadedModel, ModelSource, build_model, resolve_device

log = logging.getLogger(__name__)


def capacity() -> int:
    return int(env_number("FEATVIS_MODEL_CACHE", 2))


_MODELS: "LRUCache[Tuple, LoadedModel]" = LRUCache(maxsize=max(1, capacity()))


def _cache() -> "LRUCache[Tuple, LoadedModel]":
    """The cache, made anew (empty) when FEATVIS_MODEL_CACHE has changed since it was made."""
    global _MODELS
    if _MODELS.maxsize != max(1, capacity()):
        _MODELS = LRUCache(maxsize=max(1, capacity()))
    return _MODELS


def _stamp(path: Optional[str]) -> Optional[Tuple[str, int, int]]:
    if path is None:
        return None
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def load(config: str, checkpoint: Optional[str], device: str = "auto", *,
         trust_checkpoint: bool = False, strict: bool = True, cfg_options: Options = None,
         scale: Optional[Sequence[int]] = None) -> LoadedModel:
    """`featvis.model.load.load_model`, or the model an earlier job of this process loaded."""
    source = ModelSource.resolve(config, checkpoint, cfg_options, scale)  # a URL is downloaded (once) here
    key = (_stamp(str(source.config_path)), _stamp(source.checkpoint_file), resolve_device(device),
           trust_checkpoint, strict, source.options_key, source.scale)  # other options: another model
    cache = _cache()
    if capacity() and key in cache:
        log.info("model reused from an earlier job of this process (%s, %s)", config, checkpoint)
        reused = cache[key]  # a lookup counts as a use: the least recently used model goes first
        if reused.weights_note:  # said again for this job's log: its pictures are as partly random
            log.warning("!!! model.strict=false: checkpoint %s does not fit %s: %s !!!", checkpoint, config,
                        reused.weights_note)
        return reused
    loaded = build_model(source, device, trust_checkpoint=trust_checkpoint, strict=strict)
    if capacity():
        cache[key] = loaded
    return loaded


def clear() -> None:
    _cache().clear()
