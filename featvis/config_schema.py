"""The shape of a featvis job config, as Hydra structured configs.

Every YAML option in conf/ is merged onto these dataclasses, so a misspelt key or
a value of the wrong type is rejected while Hydra composes the config, before
any model is built. `validate()` adds the checks that types cannot express
(names that must exist in a registry, ranges). Presets stay plain data: there is
no `_target_` anywhere; backends and reductions are named through MMEngine's
VISBACKENDS registry and featvis's own reduction registry.
"""

from __future__ import annotations

import re
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from featvis.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = MISSING  # short name, used in run names
    config: str = MISSING  # a path, `mmseg::<algo>/<file>.py` or `featvis::<file>`
    checkpoint: Optional[str] = None  # a path, a URL, `featvis::<file>`, or null = random init
    # Checkpoints are pickles: by default they load with torch's weights_only=True, which
    # cannot run code. true = full unpickling, for checkpoints from a source you trust only.
    trust_checkpoint: bool = False
    # layer presets of this model, picked by the `layers` group: {preset: [names or globs]}
    layer_presets: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class LayersConfig:
    preset: Optional[str] = None  # which of model.layer_presets `names` came from
    names: List[str] = MISSING  # exact module names or glob patterns, in drawing order


@dataclass
class ReductionConfig:
    name: str = MISSING  # a key of featvis.reductions.REDUCTIONS
    topk: int = 4  # channels drawn by `topk`
    arrangement: List[int] = field(default_factory=lambda: [2, 2])  # rows, cols of the topk grid
    target_class: Optional[str] = None  # class_map, gradcam: a class name or index of the dataset
    shared_basis: bool = False  # pca_rgb: fit one basis over all images, so colours match across them


@dataclass
class NormalizeConfig:
    mode: str = "per_map"  # per_map (MMEngine's min-max) | shared (one range per layer over the run)
    #                        | fixed (`range`) | percentile (clip to `percentiles` per map)
    range: List[float] = field(default_factory=lambda: [0.0, 1.0])  # low, high for mode=fixed
    percentiles: List[float] = field(default_factory=lambda: [1.0, 99.0])  # low, high for mode=percentile
    colormap: str = "auto"  # auto (diverging for signed maps, jet otherwise) | jet | diverging
    scale_bar: bool = True  # draw the colour scale and its range on each picture


@dataclass
class BackendConfig:
    type: str = MISSING  # a class in MMEngine's VISBACKENDS registry
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to its constructor


@dataclass
class WandbConfig:
    project: str = "featvis"
    entity: Optional[str] = None
    mode: str = "auto"  # auto (offline when no API key is configured) | online | offline | disabled
    group: Optional[str] = None  # null: one group per multirun sweep
    init_timeout: float = 30.0  # seconds before wandb.init gives up


@dataclass
class ListingConfig:
    filter: str = "*"  # `mode=list` shows the modules whose full name matches this glob
    max_depth: Optional[int] = None  # and whose depth (dots + 1) is at most this; null = all


@dataclass
class Config:
    mode: str = "run"  # run: draw the layers | list: print the model's modules, shapes and presets
    model: ModelConfig = MISSING
    layers: LayersConfig = MISSING
    reduction: ReductionConfig = MISSING
    backends: Dict[str, BackendConfig] = field(default_factory=dict)
    image: str = MISSING  # a file, a folder or a glob
    gt_mask: Optional[str] = None  # a file, a folder or a glob; matched to images by file stem
    device: str = "auto"  # auto = cuda if available, else cpu
    alpha: float = 0.5  # weight of the heat map over the image
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    max_images: Optional[int] = None  # at most this many images (null: all)
    sample: str = "first"  # first | random (seeded by `seed`): which images when max_images is set
    seed: int = 0
    data_root: Optional[str] = None  # image=dataset:<split>: where the config's dataset lives
    # multirun: jobs that differ only in what they draw of a model (layers, scales, backends)
    # run it once per image and share the recorded maps (featvis.sweep_plan); false: each job runs it
    share_forward: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    listing: ListingConfig = field(default_factory=ListingConfig)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore.

    conf/config.yaml starts from `schema`, which types every key of a job; model options
    (the group teams add to most) also extend `base_model`, as in Hydra's schema tutorial.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="base_model", node=ModelConfig)


MODES = ("run", "list")
WANDB_MODES = ("auto", "online", "offline", "disabled")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def validate(cfg: DictConfig) -> None:
    """Check what the types cannot, and resolve every interpolation, before any work.

    Raises ConfigError with one line naming the key and the fix.
    """
    from featvis.reductions import CLASS_REDUCTIONS, REDUCTIONS
    from featvis.visualizer import known_backend_types

    _reject_unknown_keys(cfg, Config, "")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_interpolation_hint(cfg, err)) from err

    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is unknown: use mode=run (draw layers) or mode=list "
                          "(list the model's modules)")
    if not cfg.listing.filter:
        raise ConfigError("listing.filter is empty: use a glob such as listing.filter='decode_head.*' "
                          "(default '*': every module)")
    if cfg.listing.max_depth is not None and cfg.listing.max_depth < 1:
        raise ConfigError(f"listing.max_depth={cfg.listing.max_depth} must be at least 1 (or null for all)")
    if not cfg.layers.names:
        raise ConfigError("layers.names is empty: pick a preset (layers=decoder) or list names, "
                          "e.g. layers.names=[decode_head.conv_seg]")
    red = cfg.reduction
    if red.name not in REDUCTIONS:
        raise ConfigError(f"reduction.name={red.name!r} is unknown: use one of {sorted(REDUCTIONS)}")
    if red.name in CLASS_REDUCTIONS and red.target_class is None:
        raise ConfigError(f"reduction={red.name} needs a class: pass reduction.target_class=<class name or index>")
    if red.name == "topk":
        if red.topk < 1:
            raise ConfigError(f"reduction.topk={red.topk} must be at least 1")
        if len(red.arrangement) != 2 or min(red.arrangement) < 1:
            raise ConfigError(f"reduction.arrangement={list(red.arrangement)} must be [rows, cols], both >= 1")
        if red.arrangement[0] * red.arrangement[1] < red.topk:
            raise ConfigError(f"reduction.arrangement={list(red.arrangement)} has fewer cells than "
                              f"reduction.topk={red.topk}: enlarge it or lower topk")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise ConfigError(f"alpha={cfg.alpha} must be between 0 and 1")
    if not _DEVICE.match(cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if cfg.wandb.mode not in WANDB_MODES:
        raise ConfigError(f"wandb.mode={cfg.wandb.mode!r} is unknown: use one of {list(WANDB_MODES)}")
    if cfg.wandb.init_timeout <= 0:
        raise ConfigError(f"wandb.init_timeout={cfg.wandb.init_timeout} must be positive")
    if not cfg.backends:
        raise ConfigError("no backend selected: pass e.g. backends=[local] or backends=[local,wandb]")
    known = known_backend_types()
    for key, backend in cfg.backends.items():
        if backend.type not in known:
            raise ConfigError(f"backends.{key}.type={backend.type!r} is not in MMEngine's VISBACKENDS "
                              f"registry: use one of {sorted(known)}")
    norm = cfg.normalize
    if norm.mode not in ("per_map", "shared", "fixed", "percentile"):
        raise ConfigError(f"normalize.mode={norm.mode!r} is unknown: use one of "
                          "['per_map', 'shared', 'fixed', 'percentile']")
    if norm.colormap not in ("auto", "jet", "diverging"):
        raise ConfigError(f"normalize.colormap={norm.colormap!r} is unknown: use one of "
                          "['auto', 'jet', 'diverging']")
    if (len(norm.range) != 2 or not all(abs(v) < float("inf") for v in norm.range)
            or not norm.range[0] < norm.range[1]):
        raise ConfigError(f"normalize.range={list(norm.range)} must be [low, high], finite, with low < high")
    if len(norm.percentiles) != 2 or not 0.0 <= norm.percentiles[0] < norm.percentiles[1] <= 100.0:
        raise ConfigError(f"normalize.percentiles={list(norm.percentiles)} must be [low, high] "
                          "with 0 <= low < high <= 100")


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    """Keys added with `+key=...` bypass the schema while composing: reject them here."""
    hints = typing.get_type_hints(schema)
    for key in node.keys():
        if key not in hints:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}: check its spelling "
                              "(`python run.py --cfg job` prints every key)")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _reject_unknown_keys(node[key], hint, f"{prefix}{key}.")
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            for name, value in node[key].items():
                _reject_unknown_keys(value, typing.get_args(hint)[1], f"{prefix}{key}.{name}.")


def _interpolation_hint(cfg: DictConfig, err: OmegaConfBaseException) -> str:
    """Explain the usual interpolation failure: a layers preset the model lacks."""
    text = str(err).splitlines()[0]
    match = re.search(r"layer_presets\.(\w+)", text)
    if match:
        presets = sorted(OmegaConf.to_container(cfg.model.layer_presets, resolve=False))
        return (f"model {cfg.model.name!r} has no {match.group(1)!r} layer preset: "
                f"use one of {presets} (layers=...), or list names with layers.names=[...]")
    return f"the config cannot be resolved: {text}"
