"""mmseg config + checkpoint -> an eval-mode segmentor on the chosen device.

Models are built by mmseg's own `init_model`, the same call for the demo model and
for any user checkpoint. The checkpoint is read by featvis itself
(`safe_load.load_checkpoint_file`: weights_only unless model.trust_checkpoint=true,
whatever the MMEngine or torch version or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would do) and
handed to MMEngine's own `_load_checkpoint_to_model` (key revision); classes and palette
come from its meta as in mmseg's `init_model`. Before loading, featvis compares the
checkpoint's keys and shapes with the model's (featvis.model.mismatch): a checkpoint that
does not fit is an error unless model.strict=false, which draws anyway and says so.
SyncBN layers (used by most public configs) are reverted to plain BN when not on CUDA,
where SyncBN cannot run. A job's overrides of the mmseg config (model.cfg_options, model.scale)
are applied right after the config is read (featvis.data.mmseg_config), before anything is built.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

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

from featvis.data.mmseg_config import Options, apply_options, canonical, flatten, frozen_scale
from featvis.data.paths import checkpoint_for, resolve_model_config
from featvis.errors import CheckpointError, ConfigError
from featvis.model import extras
from featvis.model.checkpoints import is_url, resolve_checkpoint
from featvis.model.mismatch import REVISE_KEYS, KeyMismatch, compare
from featvis.model.safe_load import UnsafeCheckpointError, load_checkpoint_file

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    device: str
    dataset_meta: Dict[str, Any]  # classes and palette
    checkpoint: Optional[str]  # the local file the weights came from; None = random init
    mismatch: Optional[KeyMismatch] = None  # how the checkpoint did not fit (model.strict=false); None: it did
    config: Optional[str] = None  # model.config as given, for messages; None: not known
    non_finite: Optional[str] = None  # model.strict=false and weights hold NaN or Inf: what captions say

    @property
    def weights_note(self) -> Optional[str]:
        """`partly random weights: ...` for captions and the result file; None when the weights are whole."""
        notes = [note for note in (None if self.mismatch is None else self.mismatch.note, self.non_finite) if note]
        return "; ".join(notes) or None


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
    # model.cfg_options, flattened ({dotted key: value}, featvis.data.mmseg_config.flatten); compared by options_key
    cfg_options: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    scale: Optional[Tuple[int, int]] = None  # model.scale: (width, height) of the test Resize, or None
    options_key: str = "{}"  # cfg_options as one canonical string: what tells two sources apart

    @classmethod
    def resolve(cls, config: str, checkpoint: Optional[str], cfg_options: Options = None,
                scale: Optional[Sequence[int]] = None) -> "ModelSource":
        checkpoint = checkpoint_for(config, checkpoint)  # model.checkpoint=auto: the shipped config's own
        flat = flatten(cfg_options)
        return cls(config, resolve_model_config(config), checkpoint, resolve_checkpoint(checkpoint),
                   flat, frozen_scale(scale), canonical(flat))


def load_model(config: str, checkpoint: Optional[str], device: str = "auto", *,
               trust_checkpoint: bool = False, strict: bool = True, cfg_options: Options = None,
               scale: Optional[Sequence[int]] = None) -> LoadedModel:
    """Build the model of `config` with the weights of `checkpoint` (None: random weights).

    `cfg_options` and `scale`: model.cfg_options and model.scale (featvis.data.mmseg_config).
    """
    return build_model(ModelSource.resolve(config, checkpoint, cfg_options, scale), device,
                       trust_checkpoint=trust_checkpoint, strict=strict)


def build_model(source: ModelSource, device: str = "auto", *, trust_checkpoint: bool = False,
                strict: bool = True) -> LoadedModel:
    """The eval-mode model of `source` on `device`.

    The checkpoint is unpickled with weights_only=True (plus featvis's small allow-list of
    data-only types) unless `trust_checkpoint`: full unpickling, which can run code.
    `strict`: a checkpoint whose keys or shapes differ from the model's is a CheckpointError;
    strict=False loads what fits, warns, and records the difference (`LoadedModel.mismatch`).
    """
    device = resolve_device(device)
    config, checkpoint = source.config, source.checkpoint
    config_path, local_ckpt = source.config_path, source.checkpoint_file
    cfg = apply_options(read_config(config, config_path), source.cfg_options, source.scale)
    if local_ckpt is None:
        state = None
        log.warning("!!! model.checkpoint=null: %s has RANDOM weights. Its prediction and feature maps "
                    "show an untrained network; pass model.checkpoint=<file> for real ones. !!!", config)
    else:  # read before the model is built: a refused or broken file fails at once
        state = _read_checkpoint(local_ckpt, checkpoint, trust_checkpoint)
    missing_extra = extras.check_config(config, cfg.get("model"))  # MaskFormer without mmdet: a clear line
    if missing_extra:
        raise ConfigError(missing_extra)
    model = init_model(cfg, None, device="cpu")
    meta, mismatch, non_finite = None, None, None
    if state is not None:
        non_finite = _check_finite(state, checkpoint, strict)
        mismatch = _check_fit(model, state, checkpoint, config, strict)
        log.info("loading checkpoint %s (%s)", local_ckpt,
                 "trusted: full unpickling" if trust_checkpoint else "weights_only")
        try:  # logger='silent': MMEngine's mismatch note would go to stdout; featvis reported it above
            _load_checkpoint_to_model(model, state, strict=False, logger="silent", revise_keys=REVISE_KEYS)
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
    return LoadedModel(model=model, device=device, dataset_meta=meta, checkpoint=local_ckpt, mismatch=mismatch,
                       config=config, non_finite=non_finite)


def read_config(config: str, config_path: Path) -> Config:
    """The mmseg config file (Python: it runs, and imports its `custom_imports`), or one ConfigError.

    MMEngine reads .py, .yaml and .json configs alike; one that defines no `model` is no model
    config (a featvis conf/model/*.yaml given as model.config, a dataset config).
    """
    try:
        cfg = Config.fromfile(str(config_path))
    except ImportError as err:  # custom_imports: MMEngine's message lists sys.path and hides the cause
        raise ConfigError(_import_failure(config, err)) from err
    except Exception as err:  # a broken config file: syntax, missing _base_, ...
        raise ConfigError(f"cannot read model.config {config!r}: {_one_line(err)}") from err
    if not isinstance(cfg.get("model"), dict):
        hint = (" (a featvis option such as conf/model/ann.yaml is chosen with model=ann, not model.config)"
                if config_path.suffix in (".yaml", ".yml") else "")
        raise ConfigError(f"model.config {config!r} defines no model: pass an mmseg model config, which sets "
                          f"model=dict(type='EncoderDecoder', ...){hint}")
    return cfg


def _import_failure(config: str, err: ImportError) -> str:
    """One line naming the import that failed, why, and what to do."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    # MMEngine raises ImportError("Failed to import <name>") while handling what Python raised
    # (ModuleNotFoundError: No module named 'mmdet'), then wraps that in its sys.path message
    failed = [i for i, e in enumerate(chain) if re.match(r"Failed to import \S+$", str(e))]
    wanted = str(chain[failed[0]]).split()[-1] if failed else None
    root = chain[failed[0] + 1] if failed and failed[0] + 1 < len(chain) else chain[-1]
    missing = getattr(root, "name", None) if isinstance(root, ModuleNotFoundError) else None
    what = f"custom_imports of model.config {config!r}"
    cause = f"{type(root).__name__}: {_one_line(root)}"
    head = f"{what}: cannot import {wanted!r} ({cause})" if wanted else f"{what}: {cause}"
    if missing:
        top = missing.split(".")[0]
        if extras.advice(top):  # mmdet, mmpretrain, torchvision: a featvis extra, and the families that need it
            return f"{head}: {extras.advice(top)}"
        return (f"{head}: install the package that provides {top!r} (for example pip install {top}), "
                "or put the folder that holds it on PYTHONPATH")
    return f"{head}: fix that module, or remove it from custom_imports"


def _read_checkpoint(local: str, spec: Optional[str], trust: bool) -> Dict[str, Any]:
    """The checkpoint dict; a downloaded file that cannot be read is named, with how to remove it."""
    if spec is None or not is_url(spec):
        return load_checkpoint_file(local, trust=trust, name=spec)
    try:
        return load_checkpoint_file(local, trust=trust, name=f"{spec} (downloaded earlier to {local})")
    except UnsafeCheckpointError:
        raise  # the file is whole; what it holds is refused, and the message says what to do
    except CheckpointError as err:
        raise CheckpointError(f"{err}; delete {local} and run again to download it anew") from err


def _check_finite(state: Dict[str, Any], checkpoint: Optional[str], strict: bool) -> Optional[str]:
    """None when every floating-point tensor of the checkpoint is finite; else an error (strict), or a
    warning and the note captions carry. A diverged run saves NaN weights: its pictures would look drawn."""
    weights = state.get("state_dict", state) if isinstance(state, dict) else {}
    bad, values, tensors = [], 0, 0
    for name, tensor in (weights.items() if isinstance(weights, dict) else []):
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()):
            continue
        tensors += 1
        if bool(torch.isfinite(tensor.sum())):  # one reduction: a NaN or Inf anywhere makes the sum one
            continue
        count = int(tensor.numel() - torch.isfinite(tensor).sum())  # or only a huge sum: counted exactly
        if count:
            bad.append(name)
            values += count
    if not bad:
        return None
    first = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    what = f"{values} NaN or infinite values in {len(bad)} of its {tensors} tensors (first {first})"
    if strict:
        raise CheckpointError(f"checkpoint {checkpoint!r} holds {what}: the run that saved it diverged; pass an "
                              "earlier checkpoint, or model.strict=false to draw it anyway")
    log.warning("!!! model.strict=false: checkpoint %s holds %s; its maps and prediction are drawn from them, "
                "and captions say so. !!!", checkpoint, what)
    return f"non-finite weights: {values} values in {len(bad)} tensors"


def _check_fit(model: torch.nn.Module, state: Dict[str, Any], checkpoint: Optional[str], config: str,
               strict: bool) -> Optional[KeyMismatch]:
    """None when the checkpoint fits the model; else an error (strict) or a warning and the mismatch."""
    try:
        mismatch = compare(model, state)
    except (AttributeError, TypeError) as err:  # a state dict that is no mapping of names to tensors
        raise CheckpointError(f"checkpoint {checkpoint!r} holds no state dict of {config}: {_one_line(err)}; "
                              "check that the checkpoint belongs to this model.config") from err
    if mismatch.fits:
        return None
    if strict:
        raise CheckpointError(f"checkpoint {checkpoint!r} does not fit model.config {config!r}: "
                              f"{mismatch.details()}; pass the checkpoint of this model.config, or "
                              "model.strict=false to draw anyway with the missing weights random")
    if mismatch.random:
        log.warning("!!! model.strict=false: checkpoint %s does not fit %s: %s. The model is drawn with "
                    "%d of its %d tensors at their RANDOM initialisation; captions and the result say so. !!!",
                    checkpoint, config, mismatch.details(), mismatch.random, mismatch.total)
    else:
        log.warning("model.strict=false: checkpoint %s has keys %s does not use, ignored: %s",
                    checkpoint, config, mismatch.details())
    return mismatch


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
