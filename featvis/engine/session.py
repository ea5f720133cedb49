"""featvis as a library: a model, its layers and a reduction, ready to draw any image as the command line does.

    import featvis
    with featvis.Session(model, layers="decoder", reduction="select_max") as session:
        pictures = session.draw(image)      # a file path, or H x W x 3 uint8 BGR (mmcv's convention)
    pictures["featmap/decode_head.conv_seg"]  # H x W x 3 uint8 RGB: the picture the command line writes

No Hydra here, no output folder of its own, no sweep: the command line (featvis.pipeline.job),
a training hook and a notebook all draw through a Session. It adds its hooks when entered
(or at the first drawing) and removes them when closed, whatever happens; a model the caller
built is switched to eval mode while the session is open and back to what it was after, so
several sessions can live in one process, one after the other on the same model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from featvis.backends.base import RunInfo
from featvis.compare.sketch import positions
from featvis.data import masks
from featvis.data.batches import same_shape_batches
from featvis.data.images import Loaded
from featvis.data.limits import DEFAULT_MAX_PIXELS
from featvis.engine import inputs
from featvis.engine.drawer import stats_scalars
from featvis.engine.inference import Inference, check_drawn, first_pass
from featvis.engine.model import ModelLike, prepare
from featvis.engine.sinks import Backends, Sink
from featvis.errors import ConfigError
from featvis.record import presets
from featvis.record.layers import Selected
from featvis.record.recorded import Recorded
from featvis.record.recorder import FeatureRecorder
from featvis.reduce import registry as reductions
from featvis.reduce.base import Reduction, ReductionConfig
from featvis.render.align import crop_valid
from featvis.render.panel import Panel
from featvis.render.panels import DrawStyle, make_panels
from featvis.render.scales import COLORMAPS, NORMALIZE_MODES, ScaleRule, SharedRange

log = logging.getLogger(__name__)

NORMALIZE_KEYS = ("mode", "range", "percentiles", "colormap", "scale_bar")


class Pictures(dict):
    """One image's pictures: panel name (`input`, `ground_truth`, `prediction`, `featmap/<layer>`) ->
    H x W x 3 uint8 RGB, in drawing order; with the image's `name`, each panel's `captions`, each
    layer's activation `stats`, mmseg's `prediction` (H x W class indices) and, when the session
    keeps them, each layer's `sketch` (features at the sampled pixels, for CKA)."""

    def __init__(self, name: str, panels: Sequence[Panel], prediction: np.ndarray,
                 sketch: Optional[Dict[str, np.ndarray]] = None) -> None:
        super().__init__((p.name, p.picture) for p in panels)
        self.name = name
        self.panels = list(panels)
        self.captions = {p.name: p.caption for p in panels}
        self.stats = {p.layer: dict(p.stats) for p in panels if p.layer is not None and p.stats}
        self.prediction = prediction
        self.sketch = sketch or {}


@dataclass
class Normalize:
    """The colour-scale options (the command line's `normalize.*`)."""

    mode: str = "per_map"  # per_map | percentile | fixed | shared (shared: over the images of one draw_batch)
    range: Sequence[float] = (0.0, 1.0)
    percentiles: Sequence[float] = (1.0, 99.0)
    colormap: str = "auto"
    scale_bar: bool = True

    @classmethod
    def of(cls, given: Any) -> "Normalize":
        """From a mapping, or any object with these attributes (the command line's normalize config)."""
        if given is None or isinstance(given, Normalize):
            return given or cls()
        if not isinstance(given, Mapping):
            given = {key: getattr(given, key) for key in NORMALIZE_KEYS if hasattr(given, key)}
        unknown = sorted(set(given) - set(NORMALIZE_KEYS))
        if unknown:
            raise ConfigError(f"normalize has no option {unknown[0]!r}: use {list(NORMALIZE_KEYS)}")
        made = cls(**{k: (str(v) if k in ("mode", "colormap") else v) for k, v in given.items()})
        if made.mode not in NORMALIZE_MODES or made.colormap not in COLORMAPS:
            bad, choices = (("mode", NORMALIZE_MODES) if made.mode not in NORMALIZE_MODES
                            else ("colormap", COLORMAPS))
            raise ConfigError(f"normalize {bad}={getattr(made, bad)!r} is unknown: use one of {list(choices)}")
        return made


@dataclass
class _Count:
    drawn: int = 0
    labels: Dict[str, str] = field(default_factory=dict)  # stray mask values, by image name


class Session:
    """Draw the layers of one model. See the module's docstring; every argument after `reduction` by name.

    model: a built mmseg segmentor, or an mmseg config file (`checkpoint`: its weights; None: random)
    layers: a preset (`backbone`, `neck`, `decoder`, `auxiliary`, `dense`, or one of `layer_presets`),
        or a list of layer specs (`backbone.layer4`, `decode_head.*`, `backbone[2]`, `name:input`)
    reduction: a name (`select_max`, `topk`, `pca_rgb`, `gradcam`, ...), a dict with `name` and its
        options, or a reduction's config dataclass
    backends, save_dir: featvis's backends (`["local", "wandb"]` or the command line's mapping) and
        their folder; visualizer: an MMEngine Visualizer to log into instead (or as well)
    log_once: panels logged only the first time an image is drawn (a training hook: input, ground_truth)
    sketch_pixels: keep each layer's features at this many seeded pixels per image (`Pictures.sketch`)
    """

    def __init__(self, model: ModelLike, layers: Union[str, Sequence[str]] = "decoder",
                 reduction: Union[str, Mapping[str, Any], ReductionConfig] = "select_max", *,
                 checkpoint: Optional[str] = None, device: str = "auto", alpha: float = 0.5,
                 normalize: Union[None, Normalize, Mapping[str, Any]] = None, batch_size: int = 1,
                 cfg_options: Optional[Mapping[str, Any]] = None, scale: Optional[Sequence[int]] = None,
                 strict: bool = True, trust_checkpoint: bool = False,
                 layer_presets: Optional[Mapping[str, Sequence[str]]] = None,
                 backends: Backends = None, save_dir: Optional[Union[str, Path]] = None, visualizer: Any = None,
                 run: Optional[RunInfo] = None, log_once: Sequence[str] = (),
                 sketch_pixels: Optional[int] = None, sketch_seed: int = 0,
                 max_image_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"alpha={alpha} must be between 0 and 1")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        self.loaded = prepare(model, checkpoint, device, cfg_options=cfg_options, scale=scale, strict=strict,
                              trust_checkpoint=trust_checkpoint)
        self.model = self.loaded.model
        self.layers: List[Selected] = select_layers(self.model, layers, layer_presets or {})
        self.reduction: Reduction = make_reduction(reduction, self.model)
        self.normalize = Normalize.of(normalize)
        self.style = DrawStyle(float(alpha), ScaleRule.from_config(self.normalize), bool(self.normalize.scale_bar),
                               self.reduction, self.loaded.dataset_meta, self.loaded.weights_note)
        self.batch_size, self.max_image_pixels = int(batch_size), int(max_image_pixels)
        self.extra: List[Selected] = []  # layers recorded for others (a sweep's jobs that share forward passes)
        self.sharing: Any = None
        self.sketch_points = positions(int(sketch_pixels), int(sketch_seed)) if sketch_pixels else None
        self._inference: Optional[Inference] = None
        self.sink = Sink(backends, save_dir, visualizer, run, once=log_once)
        self.warned: set = set()  # (layer, note) pairs logged once
        self.count = _Count()
        self._open = self._checked = self._fitted = False
        self._was_training: Optional[bool] = None

    def share(self, extra: Sequence[Selected], sharing: Any, sketch_points: Optional[np.ndarray]) -> None:
        """Before the first drawing: record `extra` layers too and keep or take forwards through `sharing`
        (featvis.engine.forward_cache), with compare sketches at `sketch_points` (a sweep's job)."""
        if self._inference is not None:
            raise RuntimeError("Session.share after the session has drawn")
        self.extra, self.sharing = list(extra), sharing
        if sketch_points is not None:
            self.sketch_points = sketch_points

    @property
    def inference(self) -> Inference:
        """The forward pass with the recorder's hooks (made at the first use: `share` may come first)."""
        if self._inference is None:
            self._inference = Inference(self.reduction, self.loaded, self.layers,
                                        self._record_with(self.reduction, self.sketch_points), self.sharing)
        return self._inference

    # -- life cycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "Session":
        self.open()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(failed=exc_type is not None)

    def open(self) -> "Session":
        """Hooks on, model in eval mode. Called by `with` and by the first drawing."""
        if not self._open:
            if self._was_training is None:
                self._was_training = self.model.training
            self.model.eval()
            try:
                self.inference.__enter__()
            except BaseException:
                self.model.train(self._was_training)
                self._was_training = None
                raise
            self._open = True
        return self

    def release(self) -> None:
        """Hooks off and the model's mode as it was; the session may open again (a training hook's next drawing)."""
        try:
            if self._open:
                self._open = False
                self.inference.__exit__(None, None, None)
        finally:
            if self._was_training is not None:
                self.model.train(self._was_training)
                self._was_training = None

    def close(self, failed: bool = False) -> None:
        """Hooks off, the model's mode as it was, backends closed (their runs marked failed if `failed`)."""
        try:
            self.release()
        finally:
            self.sink.close(failed=failed)

    # -- drawing ------------------------------------------------------------------------------------
    def draw(self, image: inputs.ImageLike, mask: inputs.MaskLike = None, *, name: Optional[str] = None,
             step: Optional[int] = None) -> Pictures:
        """One image's pictures; logged to the session's backends at `step` (default: images drawn so far)."""
        return self.draw_batch([image], None if mask is None else [mask], names=None if name is None else [name],
                               step=step)[0]

    def draw_batch(self, images: Sequence[inputs.ImageLike], masks: Optional[Sequence[inputs.MaskLike]] = None,
                   *, names: Optional[Sequence[Optional[str]]] = None, step: Optional[int] = None) -> List[Pictures]:
        """Several images' pictures, in order; images of one shape share forward passes (`batch_size`).
        normalize.mode=shared and pca_rgb's shared basis are computed over these images."""
        if masks is not None and len(masks) != len(images):
            raise ConfigError(f"{len(masks)} masks for {len(images)} images: pass one mask (or None) per image")
        if names is not None and len(names) != len(images):
            raise ConfigError(f"{len(names)} names for {len(images)} images: pass one name per image")
        items = [inputs.item(img, None if masks is None else masks[i], None if names is None else names[i],
                             self.count.drawn + i, self.max_image_pixels) for i, img in enumerate(images)]
        return self.draw_items(items, step=step)

    def draw_items(self, items: Sequence[Loaded], *, step: Optional[int] = None) -> List[Pictures]:
        """`draw_batch` for images already decoded as the data stage's `Loaded` items (a dataset's,
        with their label maps applied: a training hook keeps them between drawings)."""
        items = list(masks_checked(list(items), len(self.loaded.dataset_meta["classes"]), self.count.labels))
        recorded = self.record(items)
        shared = shared_ranges(recorded) if str(self.normalize.mode) == "shared" else None
        out = []
        for rec in recorded:
            panels = self.panels(rec, shared)
            at = self.count.drawn if step is None else step
            self.sink.add(panels, stats_scalars(rec.maps), at, rec.item.sample.stem)
            self.count.drawn += 1
            pred = rec.sample.pred_sem_seg.data[0].cpu().numpy()
            out.append(Pictures(rec.item.sample.stem, panels, pred, sketches(rec)))
        return out

    def record(self, items: Iterable[Loaded]) -> List[Recorded]:
        """The model run on `items` (decoded images) with the hooks on: each image's prediction and maps."""
        items = list(items)
        self.fit(items)
        self.open()
        out: List[Recorded] = []
        for batch in same_shape_batches(items, self.batch_size):
            for item, (sample, maps) in zip(batch, self.inference.batch(batch)):
                out.append(Recorded(item, sample, maps))
                if not self._checked:  # a named layer that never ran, or no map at all: one line, at once
                    check_drawn(out[-1], self.layers, self.inference)
                    self._checked = True
        return out

    def fit(self, items: Iterable[Loaded]) -> None:
        """A reduction that needs a first pass (pca_rgb's shared basis) sees every map of `items`, once per
        session: `record` fits on its own images unless this was called first (the command line: every image)."""
        if not self.reduction.needs_first_pass(self.reduction.config) or self._fitted:
            return
        self.open()  # the model in eval mode; the first pass records with its own hooks alone
        self.inference.__exit__(None, None, None)
        self._open = False
        first_pass(self.reduction, self.loaded, self._record_with, items)
        self._fitted = True

    def fit_on(self, observed: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> None:
        """Fit the first-pass reduction on what several first passes observed (`reduction.observed()` of
        each: a job's shards, each over its own images) instead of on images of its own."""
        self.reduction.fit_on(observed)
        self._fitted = True

    def panels(self, recorded: Recorded, shared: Optional[Dict[str, SharedRange]] = None) -> List[Panel]:
        """One recorded image's pictures, exactly as the command line draws them."""
        return make_panels(self.style, recorded, self.warned, shared)

    def _record_with(self, reduce_fn: Any, sketch_points: Any = None) -> FeatureRecorder:
        return FeatureRecorder(self.layers + self.extra, reduce_fn, watch=getattr(self.model, "backbone", None),
                               root=self.model, quiet=[layer.name for layer in self.extra], sketch_points=sketch_points)


def select_layers(model: Any, layers: Union[str, Sequence[str]], refined: Mapping[str, Sequence[str]]
                  ) -> List[Selected]:
    """A preset name or layer specs -> the model's layers (LayerNotFoundError, one line, for what matches nothing)."""
    if isinstance(layers, str):
        return presets.select(model, presets.requested(layers, None), refined)
    if not layers:
        raise ConfigError("layers=[]: name at least one layer, or a preset such as 'decoder'")
    return presets.select(model, presets.requested(None, [str(spec) for spec in layers]), refined)


def make_reduction(reduction: Union[str, Mapping[str, Any], ReductionConfig, Reduction], model: Any) -> Reduction:
    """A reduction from its name, a dict (`name` and its options) or its config dataclass; options checked."""
    if isinstance(reduction, Reduction):
        return reduction
    if isinstance(reduction, str):
        return reductions.build(reductions.get(reduction).config_class(name=reduction), model)
    if isinstance(reduction, Mapping):
        options = dict(reduction)
        name = options.pop("name", None)
        if not name:
            raise ConfigError("reduction given as a dict needs its 'name', e.g. {'name': 'topk', 'topk': 4}")
        cls = reductions.get(str(name))
        known = set(cls.config_class.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"reduction {name} has no option {unknown[0]!r}: its options are "
                              f"{sorted(known - {'name'})}")
        return reductions.build(cls.config_class(name=str(name), **options), model)
    return reductions.build(reduction, model)


def masks_checked(items: List[Loaded], classes: int, notes: Dict[str, str]) -> Iterable[Loaded]:
    """Masks' stray values (not a class, not 255) set to ignore and noted, as the command line does."""
    return masks.checked(items, classes, notes)


def shared_ranges(recorded: Sequence[Recorded]) -> Dict[str, SharedRange]:
    """normalize.mode=shared: each layer's range over these images."""
    found: Dict[str, SharedRange] = {}
    for rec in recorded:
        for layer, per_item in rec.maps.items():
            ranges = found.setdefault(layer, SharedRange())
            for m in per_item[0].maps:
                ranges.update(crop_valid(m, rec.sample.metainfo))
    return found


def sketches(recorded: Recorded) -> Dict[str, np.ndarray]:
    """Each layer's features at the sampled pixels, where the session keeps them."""
    return {layer: per_item[0].sketch for layer, per_item in recorded.maps.items()
            if per_item and per_item[0].sketch is not None}
