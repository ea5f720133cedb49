"""FeatvisHook: the layers of the model being trained, drawn into the run's own visualizer as it learns.

    custom_imports = dict(imports=['featvis.hooks'], allow_failed_imports=False)
    custom_hooks = [dict(type='FeatvisHook', layers='decoder', reduction='select_max', interval=500)]

Every `interval` iterations (None: after every validation) the hook draws a fixed set of images
(`images`: files or a folder; default the first `num_images` of the runner's validation dataset,
with their ground truth) through a featvis Session (featvis.engine) into `runner.visualizer`:
`featvis/<image>/featmap/<layer>` at `step` = iterations done, the same name at every step, so
W&B's step slider scrubs one layer of one image through training; input and ground truth once.
Per layer it logs how far the features moved, with the sweep summary's definitions on the same
sampled pixels (featvis.compare.pairs): `featvis/cka_to_start/<layer>`, `featvis/change_to_start/
<layer>` against the first drawing, `featvis/cka_to_previous/<layer>`, `featvis/change_to_previous/
<layer>` against the one before, and one log line with the latest values.

Harmless to training: only rank 0 draws; the model is switched to eval, run under no-grad (mmseg's
inference), and switched back; the RNG states (Python, NumPy, torch, CUDA) are restored after, so the
same seed gives the same losses with and without the hook; the hook's options (layers, reduction,
images) are checked in `before_train`, before the first iteration; a failure while drawing is one
warning line and training goes on (`raise_errors=True` raises it instead).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from featvis.compare.pairs import Pair
from featvis.data import images as files
from featvis.data.images import Loaded
from featvis.engine import sinks
from featvis.engine.session import Pictures, Session
from featvis.errors import ConfigError, FeatvisError

log = logging.getLogger(__name__)

ONCE = ("input", "ground_truth")  # the same at every step: logged at the first drawing only


@HOOKS.register_module()
class FeatvisHook(Hook):
    """Draw chosen layers of the training model every `interval` iterations; see the module's docstring."""

    priority = "LOW"  # after the optimizer step and the logger's own hooks

    def __init__(self, layers: Union[str, Sequence[str]] = "decoder",
                 reduction: Union[str, Mapping[str, Any]] = "select_max", interval: Optional[int] = None,
                 images: Union[None, str, Sequence[str]] = None, num_images: int = 3, alpha: float = 0.5,
                 normalize: Optional[Mapping[str, Any]] = None, sketch_pixels: int = 256,
                 raise_errors: bool = False) -> None:
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ConfigError(f"FeatvisHook interval={interval!r} must be a whole number of iterations >= 1, or "
                              "None to draw after every validation")
        if not isinstance(num_images, int) or num_images < 1:
            raise ConfigError(f"FeatvisHook num_images={num_images!r} must be a whole number >= 1")
        self.layers = layers if isinstance(layers, str) else list(layers)
        self.reduction = dict(reduction) if isinstance(reduction, Mapping) else reduction
        self.interval, self.images, self.num_images = interval, images, num_images
        self.options = dict(alpha=alpha, normalize=dict(normalize or {}), sketch_pixels=sketch_pixels)
        self.raise_errors = raise_errors
        self.session: Optional[Session] = None
        self.items: List[Loaded] = []
        self.first: Optional[Dict[str, Dict[str, np.ndarray]]] = None  # image -> layer -> sampled features
        self.previous: Optional[Dict[str, Dict[str, np.ndarray]]] = None
        self.latest: Dict[str, Dict[str, Optional[float]]] = {}  # layer -> the last numbers logged
        self.drawings = 0

    # -- MMEngine's calls -----------------------------------------------------------------------
    def before_train(self, runner: Any) -> None:
        """Check the options on the real model now, not hours later: a layer that matches nothing, an unknown
        reduction or no images is a ConfigError (one line) before the first iteration."""
        if not is_main_process():
            return
        model = _unwrapped(runner.model)
        with _model_cfg(model, runner.cfg):
            try:
                self.session = Session(model, self.layers, self.reduction, visualizer=runner.visualizer,
                                       log_once=ONCE, **self.options)
            except FeatvisError as err:
                raise ConfigError(f"FeatvisHook: {err}") from None
        self.items = self._images(runner)
        runner.logger.info(f"FeatvisHook: {len(self.session.layers)} layers of {len(self.items)} images, "
                           + (f"every {self.interval} iterations" if self.interval else "after every validation"))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.interval is not None and self.every_n_train_iters(runner, self.interval):
            self.draw(runner, step=runner.iter + 1)

    def after_val_epoch(self, runner: Any, metrics: Optional[Dict[str, float]] = None) -> None:
        if self.interval is None:
            self.draw(runner, step=runner.iter)

    def after_train(self, runner: Any) -> None:
        if self.session is not None:
            self.session.close()

    # -- drawing --------------------------------------------------------------------------------
    def draw(self, runner: Any, step: int) -> Optional[List[Pictures]]:
        """One drawing of every image at `step`, logged to the runner's visualizer; None on rank > 0 or a failure."""
        if self.session is None or not self.items:
            return None
        state = _RngState()
        try:
            with _model_cfg(self.session.model, runner.cfg):
                try:
                    pictures = self.session.draw_items(self.items, step=step)
                finally:
                    self.session.release()
            self._log_movement(runner, step, pictures)
            self.drawings += 1
            return pictures
        except Exception as err:  # noqa: BLE001 (training goes on unless raise_errors)
            if self.raise_errors:
                raise
            runner.logger.warning(f"FeatvisHook: drawing at iteration {step} failed, training goes on: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return None
        finally:
            state.restore()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _log_movement(self, runner: Any, step: int, pictures: List[Pictures]) -> None:
        """CKA and change of each layer against the first drawing and the previous one, as scalars."""
        now = {p.name: dict(p.sketch) for p in pictures}
        if self.first is None:
            self.first = now
        scalars: Dict[str, float] = {}
        for kind, then in (("start", self.first), ("previous", self.previous)):
            if then is None or then is now:  # the first drawing: nothing to compare it with yet
                continue
            for layer, (cka, change) in _movement(then, now).items():
                self.latest.setdefault(layer, {})[f"cka_to_{kind}"] = cka
                self.latest[layer][f"change_to_{kind}"] = change
                scalars.update({f"featvis/{name}_to_{kind}/{layer}": value
                                for name, value in (("cka", cka), ("change", change)) if value is not None})
        self.previous = now
        if scalars:
            sinks.add_scalars(runner.visualizer, scalars, step)
            keys = ("cka_to_start", "change_to_start", "cka_to_previous", "change_to_previous")
            sinks.add_table(runner.visualizer, "featvis/movement", ("layer", *keys),
                            [(layer, *(v.get(k) for k in keys)) for layer, v in self.latest.items()], step)
            runner.logger.info("FeatvisHook: CKA to start / previous: " + "; ".join(
                f"{layer} {_num(v.get('cka_to_start'))} / {_num(v.get('cka_to_previous'))}"
                for layer, v in self.latest.items()))

    def _images(self, runner: Any) -> List[Loaded]:
        """The fixed images: `images` (files, a folder or a glob), else the first of the validation dataset."""
        if self.images is not None:
            specs = [self.images] if isinstance(self.images, (str, Path)) else list(self.images)
            samples = [s for spec in specs for s in files.collect(str(spec), None).usable()]
        else:
            dataset = _val_dataset(runner)
            if dataset is None:
                raise ConfigError("FeatvisHook: the runner has no validation dataset to take images from: pass "
                                  "images=<files, a folder or a glob>")
            infos = [dataset.get_data_info(i) for i in range(min(self.num_images, len(dataset)))]
            pairs = [(Path(i["img_path"]), Path(i["seg_map_path"]) if i.get("seg_map_path") else None)
                     for i in infos]
            first = infos[0] if infos else {}
            collected = files.check_pairs(pairs, label_map=first.get("label_map"),
                                          reduce_zero_label=bool(first.get("reduce_zero_label")))
            samples = collected.usable()
        return [files.load(sample) for sample in samples[:self.num_images]]


def _movement(then: Dict[str, Dict[str, np.ndarray]], now: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Any]:
    """layer -> (CKA, change) over the images both drawings have, on the same sampled pixels."""
    pairs: Dict[str, Pair] = {}
    for image, layers in now.items():
        for layer, features in layers.items():
            before = then.get(image, {}).get(layer)
            if before is not None and before.shape[0] == features.shape[0]:
                pairs.setdefault(layer, Pair()).add(before, features, f"{layer} on {image}")
    return {layer: pair.value() for layer, pair in pairs.items()}


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _unwrapped(model: Any) -> Any:
    """The segmentor inside a (distributed) data-parallel wrapper."""
    return getattr(model, "module", model)


def _val_dataset(runner: Any) -> Any:
    try:
        loop = runner.val_loop
    except Exception:  # noqa: BLE001 (no val_cfg / val_dataloader: MMEngine raises while building it)
        return None
    loader = getattr(loop, "dataloader", None)
    return getattr(loader, "dataset", None)


PLAIN_PIPELINE = [dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]  # each image at its own size


def _inference_cfg(cfg: Any) -> Any:
    """The runner's config, with a `test_pipeline` for mmseg's inference: its own, else the validation
    dataset's without its annotations, else each image as it is (a Runner built in Python has no config)."""
    from mmengine.config import Config  # noqa: PLC0415

    if cfg is not None and cfg.get("test_pipeline"):
        return cfg
    val = ((cfg or {}).get("val_dataloader") or {}).get("dataset") or {}
    pipeline = [step for step in val.get("pipeline") or [] if step.get("type") != "LoadAnnotations"]
    made = Config(dict(cfg or {}))
    made.test_pipeline = pipeline or PLAIN_PIPELINE
    return made


class _model_cfg:  # noqa: N801 (a context manager, used like a function)
    """mmseg's inference reads the model's config (`model.cfg`, set by init_model, not by the Runner):
    lent from the runner's while drawing, and taken back after, so the model is left as it was."""

    def __init__(self, model: Any, cfg: Any) -> None:
        self.model, self.cfg, self.lent = model, _inference_cfg(cfg), False

    def __enter__(self) -> None:
        if getattr(self.model, "cfg", None) is None:
            self.model.cfg, self.lent = self.cfg, True

    def __exit__(self, *exc: Any) -> None:
        if self.lent:
            del self.model.cfg


class _RngState:
    """Python's, NumPy's, torch's and CUDA's random states now, put back by `restore`: the training's
    augmentations and dropout see the numbers they would have seen without the hook."""

    def __init__(self) -> None:
        self.python, self.numpy, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
