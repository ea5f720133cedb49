"""mmseg config + checkpoint -> an eval-mode segmentor on the chosen device.

Models are built by mmseg's own `init_model`, the same call for the demo model and
for any user checkpoint. The checkpoint is read by featvis itself
(`safe_load.load_checkpoint_file`: weights_only unless model.trust_checkpoint=true,
whatever the MMEngine or torch version or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would do) and
handed to MMEngine's own `_load_checkpoint_to_model` (key revision, missing and unexpected
key warnings); classes and palette come from its meta as in mmseg's `init_model`.
SyncBN layers (used by most public configs) are reverted to plain BN when not on CUDA,
where SyncBN cannot run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm

# Private, on purpose: the public `load_checkpoint` reads the file itself with torch.load and
# MMEngine's own unpickling rules; featvis reads it first (weights_only, safe_load) and hands
# over the dict, keeping MMEngine's key revision and missing/unexpected-key reporting.
# tests/test_private_apis.py pins its signature.
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from mmseg.apis import init_model
from mmseg.registry import DATASETS

from featvis.config.paths import resolve_model_config
from featvis.errors import CheckpointError, ConfigError
from featvis.model.checkpoints import resolve_checkpoint
from featvis.model.safe_load import load_checkpoint_file

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    device: str
    dataset_meta: Dict[str, Any]  # classes and palette
    checkpoint: Optional[str]  # the local file the weights came from; None = random init


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but CUDA is not available here: use device=cpu or device=auto")
    return device


@dataclass(frozen=True)
class ModelSource:
    """What a model is built from, resolved once: the files, and how the user named them."""

    config: str  # model.config as given: a path, `mmseg::...` or `featvis::...`
    config_path: Path  # the existing config file
    checkpoint: Optional[str]  # model.checkpoint as given: a path, a URL, or None (random weights)
    checkpoint_file: Optional[str]  # the local file (a URL is downloaded once), or None

    @classmethod
    def resolve(cls, config: str, checkpoint: Optional[str]) -> "ModelSource":
        return cls(config, resolve_model_config(config), checkpoint, resolve_checkpoint(checkpoint))


def load_model(config: str, checkpoint: Optional[str], device: str = "auto", *,
               trust_checkpoint: bool = False) -> LoadedModel:
    """Build the model of `config` with the weights of `checkpoint` (None: random weights)."""
    return build_model(ModelSource.resolve(config, checkpoint), device, trust_checkpoint=trust_checkpoint)


def build_model(source: ModelSource, device: str = "auto", *, trust_checkpoint: bool = False) -> LoadedModel:
    """The eval-mode model of `source` on `device`.

    The checkpoint is unpickled with weights_only=True (plus featvis's small allow-list of
    data-only types) unless `trust_checkpoint`: full unpickling, which can run code.
    """
    device = resolve_device(device)
    config, checkpoint = source.config, source.checkpoint
    config_path, local_ckpt = source.config_path, source.checkpoint_file
    try:
        cfg = Config.fromfile(str(config_path))
    except Exception as err:  # a broken config file: syntax, missing _base_, ...
        raise ConfigError(f"cannot read model.config {config!r}: {_one_line(err)}") from err
    if local_ckpt is None:
        state = None
        log.warning("!!! model.checkpoint=null: %s has RANDOM weights. Its prediction and feature maps "
                    "show an untrained network; pass model.checkpoint=<file> for real ones. !!!", config)
    else:  # read before the model is built: a refused or broken file fails at once
        state = load_checkpoint_file(local_ckpt, trust=trust_checkpoint, name=checkpoint)
    model = init_model(cfg, None, device="cpu")
    meta = None
    if state is not None:
        log.info("loading checkpoint %s (%s)", local_ckpt,
                 "trusted: full unpickling" if trust_checkpoint else "weights_only")
        try:
            _load_checkpoint_to_model(model, state, strict=False, revise_keys=[(r"^module\.", "")])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot load checkpoint {checkpoint!r} into {config}: {_one_line(err)}; "
                                  "check that the checkpoint belongs to this model.config") from err
        meta = dataset_meta_from_checkpoint(state)
    if not device.startswith("cuda"):
        model = revert_sync_batchnorm(model)
    model = model.to(device).eval()
    if meta and meta.get("palette") is None:  # an mmseg 0.x checkpoint with CLASSES but no PALETTE
        meta = {**meta, "palette": dataset_meta_from_config(cfg, model)["palette"]}
    meta = meta or dataset_meta_from_config(cfg, model)
    model.dataset_meta = meta
    return LoadedModel(model=model, device=device, dataset_meta=meta, checkpoint=local_ckpt)


def dataset_meta_from_checkpoint(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Classes and palette saved in the checkpoint's meta, read as mmseg's `init_model` reads
    them: `meta.dataset_meta` (mmseg 1.x), else `meta.CLASSES` and `meta.PALETTE` (mmseg 0.x).
    None when the checkpoint has neither (then the config's dataset decides)."""
    meta = checkpoint.get("meta")
    if not isinstance(meta, dict):
        return None
    if "dataset_meta" in meta:
        return meta["dataset_meta"] or None
    if meta.get("CLASSES") is not None:
        return {"classes": meta["CLASSES"], "palette": meta.get("PALETTE")}
    return None


def dataset_meta_from_config(cfg: Any, model: torch.nn.Module) -> Dict[str, Any]:
    """Classes and palette when the checkpoint has none: the config's dataset, else generated."""

    num_classes = getattr(getattr(model, "decode_head", None), "num_classes", None)
    dataset_type = cfg.get("test_dataloader", {}).get("dataset", {}).get("type") if cfg.get(
        "test_dataloader") else None
    dataset_cls = DATASETS.get(dataset_type) if dataset_type else None
    meta = getattr(dataset_cls, "METAINFO", None) or {}
    if meta.get("classes") and (num_classes is None or len(meta["classes"]) == num_classes):
        return {"classes": list(meta["classes"]), "palette": [list(p) for p in meta["palette"]]}
    n = num_classes or 2
    gen = torch.Generator().manual_seed(0)
    palette = torch.randint(0, 256, (n, 3), generator=gen).tolist()
    return {"classes": [f"class_{i}" for i in range(n)], "palette": palette}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
