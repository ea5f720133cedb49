"""The model a session draws: one the caller already built, or an mmseg config and checkpoint loaded here.

A built segmentor is used as it is (its weights, device and `dataset_meta`); mmseg's
`inference_model` needs the config it was built from as `model.cfg` (mmseg's `init_model`
sets it). A config is loaded as the command line loads it (featvis.model: safe unpickling,
strictness, a cache per process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from torch import nn

from featvis.errors import ConfigError
from featvis.model import cache as model_cache
from featvis.model.load import LoadedModel, dataset_meta_from_config

ModelLike = Union[nn.Module, str, Path, LoadedModel]


def prepare(model: ModelLike, checkpoint: Optional[str] = None, device: str = "auto", *,
            cfg_options: Optional[Mapping[str, Any]] = None, scale: Optional[Sequence[int]] = None,
            strict: bool = True, trust_checkpoint: bool = False) -> LoadedModel:
    """`model` as a LoadedModel: a built segmentor adopted, or `model` (a config) with `checkpoint` loaded."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        if checkpoint is not None or cfg_options or scale is not None:
            raise ConfigError("checkpoint, cfg_options and scale are for a model config, not a built model: "
                              "load the weights into the model yourself, or pass its config file")
        return adopt(model)
    if isinstance(model, (str, Path)):
        return model_cache.load(str(model), checkpoint, device, trust_checkpoint=trust_checkpoint, strict=strict,
                                cfg_options=dict(cfg_options or {}), scale=scale)
    raise ConfigError(f"model of type {type(model).__name__}: pass a built mmseg segmentor (mmseg.apis.init_model) "
                      "or the path of its config file")


def adopt(model: nn.Module) -> LoadedModel:
    """A built segmentor as it is; ConfigError when it is not one mmseg can run inference with."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "decode_head"):
        raise ConfigError(f"{type(model).__name__} is not an mmseg segmentor built with its config: build it with "
                          "mmseg.apis.init_model(config, checkpoint) (which sets model.cfg), or set model.cfg to "
                          "the mmengine Config it was built from")
    meta = getattr(model, "dataset_meta", None)
    if not meta or not meta.get("classes") or not meta.get("palette"):
        meta = dataset_meta_from_config(cfg, model)
        model.dataset_meta = meta
    device = str(next(model.parameters()).device) if any(True for _ in model.parameters()) else "cpu"
    return LoadedModel(model=model, device=device, dataset_meta=meta, checkpoint=None,
                       config=getattr(cfg, "filename", None) or type(model).__name__)
