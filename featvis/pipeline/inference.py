"""image -> (prediction, recorded maps): the model's forward pass with the recorder's hooks on.

A reduction that uses_gradients (Grad-CAM) runs the model itself; one that needs a first
pass (pca_rgb with a shared basis) sees every image once before (`first_pass`); an image
an earlier job of the sweep already ran is taken from what that job kept (share_forward).
A forward pass that fails (an image too small for the model) is one line naming the image
(featvis.pipeline.forward_errors).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from mmseg.apis import inference_model

from featvis.data import images as inputs
from featvis.errors import LayerNotFoundError
from featvis.model.load import LoadedModel
from featvis.pipeline.forward_errors import explained
from featvis.record.layers import Selected
from featvis.record.recorded import Recorded
from featvis.record.recorder import FeatureRecorder, flatten
from featvis.reduce.base import Reduced, Reduction
from featvis.sweep import shared_forward

log = logging.getLogger(__name__)


def first_pass(reduction: Reduction, loaded: LoadedModel, record: Callable[..., FeatureRecorder],
               samples: List[inputs.Sample]) -> None:
    """For a reduction that needs_first_pass: show it every map of every image (`observe`), then `fit`."""
    with record(reduction.observe, sketch_points=None) as recorder:  # the sketch is taken in the real pass
        for item in inputs.iter_loaded(samples, []):  # decoding problems are reported by the main pass
            with explained(loaded.model, item, loaded.config):  # a too-small image: one line saying so
                inference_model(loaded.model, item.image_bgr)
            recorder.pop()
    reduction.fit()
    log.info("%s: first pass over %d images done", reduction.name, len(samples))


class Inference:
    """image -> (prediction, {layer: [Reduced]}): forward hooks, or the reduction's own run of the model.

    With `sharing`, the recorder also records the layers of the sweep's other jobs, and an
    image another job already ran is taken from what that job kept.
    """

    def __init__(self, reduction: Reduction, loaded: LoadedModel, layers: List[Any], recorder: FeatureRecorder,
                 sharing: Optional[shared_forward.Sharing] = None) -> None:
        self.model, self.reduction, self.layers, self.sharing = loaded.model, reduction, layers, sharing
        self.own = [layer.name for layer in layers]
        self.config = loaded.config  # model.config, for the one line of a failed forward (forward_errors)
        # uses_gradients (Grad-CAM): the reduction hooks the layers itself
        self.recorder: Optional[FeatureRecorder] = None if reduction.uses_gradients else recorder
        self.forwards = self.reused = 0
        self.ran: set = set()  # layer names that ran (or were taken from a kept forward that ran them)
        self.skipped: Dict[str, Dict[str, str]] = {}  # layer name -> {sub-name: why it gave no map}

    def __enter__(self) -> "Inference":
        if self.recorder is not None:
            self.recorder.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(*exc)

    def __call__(self, item: inputs.Loaded) -> Tuple[Any, Dict[str, List[Reduced]]]:
        if self.recorder is None:
            self.forwards += 1
            with explained(self.model, item, self.config):
                own = self.reduction.run_model(item.image_bgr, self.layers)
            self.ran |= {layer.name for layer in self.layers if any(_is_sub(n, layer.name) for n in own.maps)}
            return own.sample, {name: [reduced] for name, reduced in own.maps.items()}
        kept = self.sharing.take(item.sample.image_path) if self.sharing else None
        if kept is not None:
            self.reused += 1
            sample, by_layer = kept
            self.ran |= {name for name, subs in by_layer.items() if subs}
            return sample, flatten(by_layer, self._order(by_layer))
        with explained(self.model, item, self.config):  # a too-small image: one line saying so
            sample = inference_model(self.model, item.image_bgr)
        self.forwards += 1
        by_layer = self.recorder.pop_layers()
        self.ran |= self.recorder.ran
        self.skipped = self.recorder.skipped
        if self.sharing is not None:
            self.sharing.keep(item.sample.image_path, sample, by_layer, self.recorder.skipped)
        return sample, flatten(by_layer, self._order(by_layer))

    def _order(self, by_layer: Dict[str, Any]) -> List[str]:
        """The job's own layers in drawing order: as they ran for a preset, else as the user listed them."""
        if any(getattr(layer, "optional", False) for layer in self.layers):
            own = set(self.own)
            return [name for name in by_layer if name in own]
        return self.own


def _is_sub(sub: str, layer: str) -> bool:
    """Whether `sub` (`backbone[0]`, `head#2`) is a map of layer `layer`."""
    return sub == layer or sub.startswith((layer + "[", layer + ":", layer + "#"))


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

