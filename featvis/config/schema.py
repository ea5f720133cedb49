"""The shape of a featvis job config, as Hydra structured configs.

Every YAML option in conf/ is merged onto these dataclasses, so a misspelt key or
a value of the wrong type is rejected while Hydra composes the config, before
any model is built. `validate()` adds the checks that types cannot express
(names that must exist in a registry, ranges). Presets stay plain data: there is
no `_target_` anywhere; backends and reductions are named through MMEngine's
VISBACKENDS registry and featvis's own reduction registry.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from featvis.data import paths
from featvis.data.limits import DECODER_MAX_PIXELS, DEFAULT_MAX_PIXELS
from featvis.errors import ConfigError
from featvis.reduce.options import OPTIONS, ReductionConfig


class Choice(str, Enum):
    """A config value out of a fixed set: OmegaConf refuses any other while Hydra composes.

    A str subclass, so `cfg.mode == "list"` holds and the value prints as itself.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Mode(Choice):
    run = "run"  # draw the layers
    list = "list"  # print the model's modules, their output shapes and presets


class SampleMode(Choice):
    first = "first"  # the first max_images images, in file order
    random = "random"  # a seeded random choice (`seed`), kept in file order


class Estimator(Choice):
    linear = "linear"  # linear CKA over every sampled pixel of every image (Kornblith et al. 2019)
    unbiased = "unbiased"  # minibatch CKA, an image per minibatch, from the unbiased HSIC (Nguyen et al. 2021)


class Embedding(Choice):
    pca = "pca"  # the first two principal components: exact, fast, the same axes for every point
    tsne = "tsne"  # scikit-learn's t-SNE (seeded): clusters shown apart, distances between them not kept


class NormalizeMode(Choice):
    per_map = "per_map"  # each map's own min and max (MMEngine's behaviour)
    shared = "shared"  # one range per layer over every image of the run
    fixed = "fixed"  # normalize.range, for every map and every job
    percentile = "percentile"  # each map clipped to normalize.percentiles


class ColormapName(Choice):
    auto = "auto"  # diverging for signed maps, jet otherwise
    jet = "jet"
    diverging = "diverging"


class WandbMode(Choice):
    auto = "auto"  # online with an API key, offline without one
    online = "online"
    offline = "offline"
    disabled = "disabled"


AUTO = paths.AUTO
SCHEMA_PREFIX = "base_"  # the ConfigStore's schema entries (model/base_model, reduction/base_topk): no option to type


@dataclass
class ModelConfig:
    config: str = MISSING  # a path, `mmseg::<algo>/<file>.py` or `featvis::<file>`
    name: Optional[str] = None  # short name for logs and listings; null = the config file's stem
    # a path, a URL, `featvis::<file>`, null = random weights, or auto = the checkpoint of a
    # shipped config (mmseg::: the URL its metafile.yaml names; featvis::: the shipped file);
    # a config of your own has no auto checkpoint: give one (or null)
    checkpoint: Optional[str] = AUTO
    # merged into the mmseg config before the model is built (MMEngine's Config.merge_from_dict,
    # as mmseg's tools' --cfg-options): e.g. {model.test_cfg.mode: whole}
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    # [width, height] for the test pipeline's Resize (mmseg's `scale`; keep_ratio stays the config's)
    scale: Optional[List[int]] = None
    # Checkpoints are pickles: by default they load with torch's weights_only=True, which
    # cannot run code. true = full unpickling, for checkpoints from a source you trust only.
    trust_checkpoint: bool = False
    # A checkpoint whose keys or shapes differ from the model's is an error; false = draw
    # anyway (what does not fit stays random), said in the log, the captions and the result.
    strict: bool = True
    # refinements of the generic layer presets (featvis.record.presets): {preset: [layer specs]}
    layer_presets: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class LayersConfig:
    # a preset, resolved on the built model (featvis.record.presets): backbone, neck, decoder,
    # auxiliary, dense; or one of model.layer_presets. Ignored (set to null) when `names` is given.
    preset: Optional[str] = None
    names: Optional[List[str]] = None  # exact module names or glob patterns, in drawing order


@dataclass
class NormalizeConfig:
    mode: NormalizeMode = NormalizeMode.per_map
    range: List[float] = field(default_factory=lambda: [0.0, 1.0])  # low, high for mode=fixed
    percentiles: List[float] = field(default_factory=lambda: [1.0, 99.0])  # low, high for mode=percentile
    colormap: ColormapName = ColormapName.auto
    scale_bar: bool = True  # draw the colour scale and its range on each picture


@dataclass
class BackendConfig:
    type: str = MISSING  # a class in MMEngine's VISBACKENDS registry
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to its constructor


@dataclass
class WandbConfig:
    project: str = "featvis"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.auto
    group: Optional[str] = None  # null: one group per multirun sweep
    init_timeout: float = 30.0  # seconds before wandb.init gives up
    image_format: str = "jpeg"  # jpeg | png: how pictures are uploaded
    quality: int = 90  # jpeg quality, 1..100
    max_side: Optional[int] = 1024  # longest side of an uploaded picture, in pixels; null = full size


@dataclass
class ListingConfig:
    filter: str = "*"  # `mode=list` shows the modules whose full name matches this glob
    max_depth: Optional[int] = None  # and whose depth (dots + 1) is at most this; null = all


@dataclass
class CompareConfig:
    # keep each image's sketch (featvis.compare.sketch: features at sampled pixels, reduced maps) for
    # comparing checkpoints in the sweep summary: null = when the sweep varies model.checkpoint
    sketch: Optional[bool] = None
    pixels: int = 256  # pixel positions sampled per image, the same in every job (seeded)
    seed: int = 0
    baseline: Optional[str] = None  # the checkpoint the others are compared with; null = the first job's
    layer_similarity: bool = False  # also the CKA matrix of this job's layers, as a picture and a table
    # the CKA the summary shows (index, heat map, W&B); summary.json holds both: linear = plain linear CKA
    # over all sampled pixels, unbiased = minibatch CKA from the unbiased HSIC (no upward bias for few pixels)
    estimator: Estimator = Estimator.linear
    embedding: Embedding = Embedding.pca  # the summary's 2-D view of the pixels by class: pca | tsne


@dataclass
class Config:
    mode: Mode = Mode.run
    model: ModelConfig = MISSING
    layers: LayersConfig = MISSING
    reduction: ReductionConfig = MISSING  # a reduction's own config dataclass (featvis.reduce), merged by its YAML
    backends: Dict[str, BackendConfig] = field(default_factory=dict)
    # a file, a folder or a glob; auto = the demo scenes for the demo model, a sample photo for any other
    image: str = AUTO
    # a file, a folder or a glob, matched to images by file stem; auto = the demo scenes'
    # masks when drawing the demo model on them, else none
    gt_mask: Optional[str] = AUTO
    device: str = "auto"  # auto = cuda if available, else cpu
    alpha: float = 0.5  # weight of the heat map over the image
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    max_images: Optional[int] = None  # at most this many images, >= 1 (null: all)
    batch_size: int = 1  # images per forward pass (of one shape: a different one starts a new batch)
    # an image or mask over this many pixels (width x height in its header) is refused before it is
    # decoded, like an unreadable one (featvis.data.limits: PIL's limit; at most OpenCV's 2**30)
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # memory, in GiB, a job may plan for (featvis.engine.budget): null = what the machine has available
    # (MemAvailable, the cgroup's limit, ulimit -v; on CUDA the device's free memory); a number replaces it
    max_memory_gib: Optional[float] = None
    sample: SampleMode = SampleMode.first  # which images when max_images is set
    seed: int = 0
    data_root: Optional[str] = None  # image=dataset:<split>: where the config's dataset lives
    # multirun: jobs that differ only in what they draw of a model (layers, scales, backends)
    # run it once per image and share the recorded maps (featvis.sweep.plan); false: each job runs it
    share_forward: bool = True
    # multirun: split each job's images into this many shards, each drawn by a job of its own
    # (`-m shards=N`: featvis.sweep.shards); the sweep's summary merges a job's shards into one
    shards: int = 1
    shard: Optional[int] = None  # which shard this job draws, 0..shards-1 (set by `-m shards=N`)
    # CPU threads for the model (torch.set_num_threads); null = torch's own, or, for a shard, the
    # cores it may use divided among the shards that run on its machine at once
    threads: Optional[int] = None
    wandb: WandbConfig = field(default_factory=WandbConfig)
    listing: ListingConfig = field(default_factory=ListingConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore.

    conf/config.yaml starts from `schema`, which types every key of a job; model options
    (the group teams add to most) also extend `base_model`, as in Hydra's schema tutorial.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name=f"{SCHEMA_PREFIX}model", node=ModelConfig)
    for name, options in OPTIONS.items():  # reduction/base_<name>: each reduction's own options
        cs.store(group="reduction", name=f"{SCHEMA_PREFIX}{name}", node=options(name=name))


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def validate(cfg: DictConfig) -> Config:
    """Check what the types cannot, resolve every interpolation, and return the typed `Config`.

    The one conversion from Hydra's DictConfig: everything below the CLI gets the
    dataclasses (`OmegaConf.to_object`). Raises ConfigError with one line naming the key
    and the fix. The checks that need a registry (reductions, MMEngine's backends) import it
    here, when a job runs: composing, --help and --cfg never import torch or mmseg.
    """

    _reject_unknown_keys(cfg, Config, "")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_interpolation_hint(cfg, err)) from err
    resolve_auto(cfg)

    if not cfg.listing.filter:
        raise ConfigError("listing.filter is empty: use a glob such as listing.filter='decode_head.*' "
                          "(default '*': every module)")
    if cfg.listing.max_depth is not None and cfg.listing.max_depth < 1:
        raise ConfigError(f"listing.max_depth={cfg.listing.max_depth} must be at least 1 (or null for all)")
    if cfg.layers.names is not None and not cfg.layers.names:
        raise ConfigError("layers.names is empty: pick a preset (layers=decoder) or list names, "
                          "e.g. layers.names=[decode_head.conv_seg]")
    if cfg.model.scale is not None and (len(cfg.model.scale) != 2 or min(cfg.model.scale) < 1):
        raise ConfigError(f"model.scale={list(cfg.model.scale)} must be [width, height], both at least 1 "
                          "(the test pipeline's Resize scale), or null for the config's own")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise ConfigError(f"alpha={cfg.alpha} must be between 0 and 1")
    if not _DEVICE.match(cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if not 0 < cfg.wandb.init_timeout < float("inf"):  # NaN too
        raise ConfigError(f"wandb.init_timeout={cfg.wandb.init_timeout} must be a positive number of seconds")
    if not 1 <= cfg.batch_size <= 1024:
        raise ConfigError(f"batch_size={cfg.batch_size} must be between 1 and 1024 (images per forward pass)")
    if not 1 <= cfg.max_image_pixels <= DECODER_MAX_PIXELS:
        raise ConfigError(f"max_image_pixels={cfg.max_image_pixels} must be between 1 and {DECODER_MAX_PIXELS} "
                          f"(OpenCV decodes no larger image; default {DEFAULT_MAX_PIXELS}, PIL's limit)")
    if cfg.max_memory_gib is not None and not 0 < cfg.max_memory_gib < float("inf"):  # NaN too
        raise ConfigError(f"max_memory_gib={cfg.max_memory_gib} must be a positive number of GiB, or null for "
                          "the memory the machine has available")
    if cfg.max_images is not None and cfg.max_images < 1:
        raise ConfigError(f"max_images={cfg.max_images} must be at least 1 (or null for every image)")
    _check_shards(cfg)
    if not cfg.backends:
        raise ConfigError("no backend selected: pass e.g. backends=[local] or backends=[local,wandb]")
    if not 16 <= cfg.compare.pixels <= 65536:
        raise ConfigError(f"compare.pixels={cfg.compare.pixels} must be between 16 and 65536 "
                          "(pixels sampled per image)")
    norm = cfg.normalize
    if (len(norm.range) != 2 or not all(abs(v) < float("inf") for v in norm.range)
            or not norm.range[0] < norm.range[1]):
        raise ConfigError(f"normalize.range={list(norm.range)} must be [low, high], finite, with low < high")
    if len(norm.percentiles) != 2 or not 0.0 <= norm.percentiles[0] < norm.percentiles[1] <= 100.0:
        raise ConfigError(f"normalize.percentiles={list(norm.percentiles)} must be [low, high] "
                          "with 0 <= low < high <= 100")
    # last, the checks that need a registry: they import torch and MMEngine (seconds), which the
    # checks above and every composing error spare
    from featvis.backends.encoding import PictureFormat  # noqa: PLC0415
    from featvis.backends.visualizer import known_backend_types  # noqa: PLC0415
    from featvis.backends.wandb import WANDB_FORMATS  # noqa: PLC0415
    from featvis.reduce import registry as reductions  # noqa: PLC0415
    reductions.check(cfg.reduction)  # a known name, its own config type, its option values
    if cfg.wandb.image_format not in WANDB_FORMATS:
        raise ConfigError(f"wandb.image_format={cfg.wandb.image_format!r}: W&B shows "
                          f"{' or '.join(WANDB_FORMATS)} pictures; use one of those")
    try:
        PictureFormat(cfg.wandb.image_format, cfg.wandb.quality, cfg.wandb.max_side)
    except ConfigError as err:
        raise ConfigError(f"wandb.{err}") from None
    known = known_backend_types()
    for key, backend in cfg.backends.items():
        if backend.type not in known:
            raise ConfigError(f"backends.{key}.type={backend.type!r} is not in MMEngine's VISBACKENDS "
                              f"registry: use one of {sorted(known)}")
    return typed(cfg)


MAX_SHARDS = 10_000


def _check_shards(cfg: DictConfig) -> None:
    if not 1 <= cfg.shards <= MAX_SHARDS:
        raise ConfigError(f"shards={cfg.shards} must be between 1 and {MAX_SHARDS} (jobs each job's images are split "
                          "into)")
    if cfg.shard is not None and not 0 <= cfg.shard < cfg.shards:
        raise ConfigError(f"shard={cfg.shard} must be between 0 and shards-1={cfg.shards - 1}; `-m shards=N` sets it")
    if cfg.threads is not None and not 1 <= cfg.threads <= 4096:
        raise ConfigError(f"threads={cfg.threads} must be at least 1 (CPU threads for the model), or null")


def resolve_auto(cfg: DictConfig) -> None:
    """Settle what follows from model.config, in place, so that logs, listings, results and W&B say it.

    - model.name: null -> the config file's stem;
    - model.checkpoint: auto -> the shipped config's checkpoint (data.paths.checkpoint_for);
    - image: auto -> the demo scenes for the demo model, a sample photo for any other;
    - gt_mask: auto -> the demo scenes' masks when the demo model draws the demo scenes, else null;
    - layers: names given -> no preset (the names are what is drawn); neither -> an error.
    """
    model = cfg.model
    demo = paths.is_demo_config(model.config)
    if model.name is None:
        model.name = paths.config_stem(model.config)
    model.checkpoint = paths.checkpoint_for(model.config, model.checkpoint)
    if cfg.image == AUTO:
        cfg.image = paths.DEMO_IMAGES if demo else paths.SAMPLE_IMAGE
    if cfg.gt_mask == AUTO:
        cfg.gt_mask = paths.DEMO_MASKS if demo and cfg.image == paths.DEMO_IMAGES else None
    if cfg.layers.names is not None:
        cfg.layers.preset = None
    elif cfg.layers.preset is None:
        raise ConfigError("no layers chosen: pick a preset (layers=decoder, backbone, neck, auxiliary, dense) "
                          "or list names, e.g. layers.names=[decode_head.conv_seg]")


def typed(cfg: Any) -> Config:
    """`cfg` as the `Config` dataclass: a composed DictConfig is converted, a Config is returned as is."""
    if isinstance(cfg, Config):
        return cfg
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"the config cannot be read: {str(err).splitlines()[0]}") from err


def plain(config: Config) -> Dict[str, Any]:
    """The config as plain YAML-able data (choices as their strings): for W&B and config.yaml files."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    """Keys added with `+key=...` bypass the schema while composing: reject them here."""
    hints = typing.get_type_hints(schema)
    for key in node.keys():
        if key not in hints:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}: check its spelling "
                              "(`python run.py --cfg job` prints every key)")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            merged = OmegaConf.get_type(node, key)  # a subclass of the hint: reduction is TopkConfig, ...
            schema_of = merged if isinstance(merged, type) and issubclass(merged, hint) else hint
            _reject_unknown_keys(node[key], schema_of, f"{prefix}{key}.")
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            for name, value in node[key].items():
                _reject_unknown_keys(value, typing.get_args(hint)[1], f"{prefix}{key}.{name}.")


def _interpolation_hint(cfg: DictConfig, err: OmegaConfBaseException) -> str:
    """The first line of an interpolation failure (`${...}` naming a key that is not there)."""
    return f"the config cannot be resolved: {str(err).splitlines()[0]}"
