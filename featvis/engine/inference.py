"""image -> (prediction, recorded maps): the model's forward pass with the recorder's hooks on.

A reduction that uses_gradients (Grad-CAM) runs the model itself; one that needs a first
pass (pca_rgb with a shared basis) sees every image once before (`first_pass`); an image
an earlier job of the sweep already ran is taken from what that job kept (share_forward).
A forward pass that fails (an image too small for the model) is one line naming the image
(featvis.engine.forward_errors); one that fails because the network needs its input to be a
multiple of its stride (DDRNet, PIDNet) is run again on the input padded to it, after what the
failed pass recorded is dropped (featvis.model.stride: found once per model, and only then).
With padding, the compare sketch's points are moved into the part of each map that covers
the image (`_SketchPoints`), so that they sample the image, not the padding.
`Inference.batch` runs several images of one shape in one forward pass (`batch_size`); the
recorder keeps one map per batch item, so each image's maps are what it would get alone.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
from mmseg.apis import inference_model
from torch import nn

from featvis.data import images as inputs
from featvis.engine import forward_cache
from featvis.engine.forward_errors import run_explained
from featvis.errors import LayerNotFoundError
from featvis.model.load import LoadedModel
from featvis.record.layers import Selected
from featvis.record.recorded import Recorded
from featvis.record.recorder import FeatureRecorder, flatten
from featvis.reduce.base import Reduced, Reduction

log = logging.getLogger(__name__)


def first_pass(reduction: Reduction, loaded: LoadedModel, record: Callable[..., FeatureRecorder],
               items: Iterable[inputs.Loaded]) -> None:
    """For a reduction that needs_first_pass: show it every map of every image (`observe`), then `fit`."""
    images = 0
    with record(reduction.observe, sketch_points=None) as recorder:  # the sketch is taken in the real pass
        for item in items:
            images += 1
            # a too-small image: one line saying so; a model that needs padding: padded, run again
            run_explained(partial(inference_model, loaded.model, item.image_bgr), loaded.model, item,
                          loaded.config, discard=recorder.pop)
            recorder.pop()
    reduction.fit()
    log.info("%s: first pass over %d images done", reduction.name, images)


class Inference:
    """image -> (prediction, {layer: [Reduced]}): forward hooks, or the reduction's own run of the model.

    With `sharing`, the recorder also records the layers of the sweep's other jobs, and an
    image another job already ran is taken from what that job kept.
    """

    def __init__(self, reduction: Reduction, loaded: LoadedModel, layers: List[Any], recorder: FeatureRecorder,
                 sharing: Optional[forward_cache.Sharing] = None) -> None:
        self.model, self.reduction, self.layers, self.sharing = loaded.model, reduction, layers, sharing
        self.own = [layer.name for layer in layers]
        self.config = loaded.config  # model.config, for the one line of a failed forward (forward_errors)
        # uses_gradients (Grad-CAM): the reduction hooks the layers itself
        self.recorder: Optional[FeatureRecorder] = None if reduction.uses_gradients else recorder
        self.forwards = self.reused = 0  # images run through the model here, images taken from a kept forward
        self.passes = 0  # forward passes (a batch is one)
        self._warned_batch: set = set()  # sub-names whose output was no batch of maps
        self.ran: set = set()  # layer names that ran (or were taken from a kept forward that ran them)
        self.skipped: Dict[str, Dict[str, str]] = {}  # layer name -> {sub-name: why it gave no map}
        self._points: Optional[_SketchPoints] = None

    def __enter__(self) -> "Inference":
        if self.recorder is not None:
            self.recorder.__enter__()
            if self.recorder.sketch_points is not None:
                self._points = _SketchPoints(self.recorder, self.model)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._points is not None:
            self._points.close()
        if self.recorder is not None:
            self.recorder.__exit__(*exc)

    def __call__(self, item: inputs.Loaded) -> Tuple[Any, Dict[str, List[Reduced]]]:
        if self.recorder is None:
            self.forwards += 1
            self.passes += 1
            own = run_explained(partial(self.reduction.run_model, item.image_bgr, self.layers), self.model, item,
                                self.config)
            self.ran |= {layer.name for layer in self.layers if any(_is_sub(n, layer.name) for n in own.maps)}
            return own.sample, {name: [reduced] for name, reduced in own.maps.items()}
        kept = self.sharing.take(item.sample.image_path) if self.sharing else None
        if kept is not None:
            return self._taken(kept)
        # a too-small image: one line saying so; a model that needs padding: padded, run again
        sample = run_explained(partial(inference_model, self.model, item.image_bgr), self.model, item, self.config,
                               discard=self.recorder.pop_layers)
        return self._recorded(item, sample, self._popped(1))

    def batch(self, items: List[inputs.Loaded]) -> List[Tuple[Any, Dict[str, List[Reduced]]]]:
        """Several images (of one shape: featvis.data.batches) in one forward pass; per image, what
        `self(item)` gives. Images a kept forward has are taken from it; Grad-CAM runs them one by one."""
        if self.recorder is None or len(items) == 1:
            return [self(item) for item in items]
        kept = {i: self.sharing.take(item.sample.image_path) for i, item in enumerate(items)} if self.sharing else {}
        out = {i: self._taken(found) for i, found in kept.items() if found is not None}
        todo = [i for i in range(len(items)) if i not in out]
        if len(todo) == 1:
            out[todo[0]] = self(items[todo[0]])
        elif todo:
            # one shape: what fails, fails for all
            samples = run_explained(partial(inference_model, self.model, [items[i].image_bgr for i in todo]),
                                    self.model, items[todo[0]], self.config, discard=self.recorder.pop_layers)
            by_layer = self._popped(len(todo))
            for j, i in enumerate(todo):
                out[i] = self._recorded(items[i], samples[j], self._item_of(by_layer, j, len(todo)))
        return [out[i] for i in range(len(items))]

    def _taken(self, kept: Tuple[Any, Dict[str, Dict[str, List[Reduced]]]]) -> Tuple[Any, Dict[str, List[Reduced]]]:
        """An image another job of the sweep ran: its kept prediction and maps."""
        self.reused += 1
        sample, by_layer = kept
        self.ran |= {name for name, subs in by_layer.items() if subs}
        return sample, flatten(by_layer, self._order(by_layer))

    def _popped(self, images: int) -> Dict[str, Dict[str, List[Reduced]]]:
        """What the recorder took of one forward pass over `images` images."""
        by_layer = self.recorder.pop_layers()
        self.forwards += images
        self.passes += 1
        self.ran |= self.recorder.ran
        self.skipped = self.recorder.skipped
        return by_layer

    def _recorded(self, item: inputs.Loaded, sample: Any, by_layer: Dict[str, Dict[str, List[Reduced]]]
                  ) -> Tuple[Any, Dict[str, List[Reduced]]]:
        """One image's forward: kept for the sweep's other jobs (share_forward), and its maps in drawing order."""
        if self.sharing is not None:
            self.sharing.keep(item.sample.image_path, sample, by_layer, self.recorder.skipped)
        return sample, flatten(by_layer, self._order(by_layer))

    def _item_of(self, by_layer: Dict[str, Dict[str, List[Reduced]]], j: int, n: int
                 ) -> Dict[str, Dict[str, List[Reduced]]]:
        """Batch item j's maps of a forward over n images: each sub-name's j-th map. An output that is
        no batch of n maps (a module that mixes the images) cannot be told apart per image: left out."""
        mine: Dict[str, Dict[str, List[Reduced]]] = {}
        for layer, subs in by_layer.items():
            mine[layer] = {}
            for sub, maps in subs.items():
                if len(maps) == n:
                    mine[layer][sub] = [maps[j]]
                elif sub not in self._warned_batch:
                    self._warned_batch.add(sub)
                    log.warning("%s: its output holds %d maps for a batch of %d images, so they cannot be told "
                                "apart per image: not drawn with batch_size > 1 (use batch_size=1)", sub, len(maps), n)
        return mine

    def _order(self, by_layer: Dict[str, Any]) -> List[str]:
        """The job's own layers in drawing order: as they ran for a preset, else as the user listed them."""
        if any(getattr(layer, "optional", False) for layer in self.layers):
            own = set(self.own)
            return [name for name in by_layer if name in own]
        return self.own


def _is_sub(sub: str, layer: str) -> bool:
    """Whether `sub` (`backbone[0]`, `head#2`) is a map of layer `layer`."""
    return sub == layer or sub.startswith((layer + "[", layer + ":", layer + "#"))


class _SketchPoints:
    """The compare sketch's points (normalized image coordinates) moved, for each forward pass, into the
    part of the model's input that is the image: a padded input (the data preprocessor's test_cfg,
    featvis.model.stride) has the image at its top left, and a map spans the padded input."""

    def __init__(self, recorder: FeatureRecorder, model: nn.Module) -> None:
        self.recorder, self.points = recorder, recorder.sketch_points
        pre = getattr(model, "data_preprocessor", None)
        self.handle = pre.register_forward_hook(self._fit) if isinstance(pre, nn.Module) else None

    def _fit(self, module: nn.Module, args: Any, output: Any) -> None:
        samples = output.get("data_samples") if isinstance(output, Mapping) else None
        scale = image_fraction(samples[0].metainfo) if samples else (1.0, 1.0)
        self.recorder.sketch_points = self.points if scale == (1.0, 1.0) else self.points * np.array(scale)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.recorder.sketch_points = self.points


def image_fraction(meta: Mapping) -> Tuple[float, float]:
    """(height, width) of the image (`img_shape`) as fractions of the padded input the model saw."""
    img = meta.get("img_shape")
    full = meta.get("batch_input_shape") or meta.get("pad_shape")
    if not img or not full:
        return 1.0, 1.0
    return min(1.0, img[0] / full[0]), min(1.0, img[1] / full[1])


def check_drawn(recorded: Recorded, layers: List[Selected], inference: Inference) -> None:
    """After the first image: a layer the user named that never ran, or a job with no map at all, fails.

    Before this, such a job exited 0 with no feature map (a container such as a ViT's
    `backbone.layers`, a training-only branch). Layers from a preset that do not run are left out.
    """
    image = recorded.item.sample.image_path.name
    never = [layer.name for layer in layers if not layer.optional and layer.name not in inference.ran]
    if never:
        more = f" (and {len(never) - 1} more)" if len(never) > 1 else ""
        raise LayerNotFoundError(f"layer {never[0]}{more} never ran in the forward pass on {image}: mmseg does "
                                 "not call it at inference (a training-only branch, or its parent calls its "
                                 "forward directly), so it has nothing to draw; python run.py mode=list shows "
                                 "what runs (- = never)")
    if not any(recorded.maps.values()):
        why = next((f"{sub}: {reason}" for subs in inference.skipped.values() for sub, reason in subs.items()), None)
        raise LayerNotFoundError(f"no feature map to draw on {image}: "
                                 f"{why or 'none of the chosen layers gave a (B, C, H, W) map'}; "
                                 "choose other layers (python run.py mode=list shows every output's shape)")

