"""image -> (prediction, recorded maps): the model's forward pass with the recorder's hooks on.

A reduction that uses_gradients (Grad-CAM) runs the model itself; one that needs a first
pass (pca_rgb with a shared basis) sees every image once before (`first_pass`); an image
an earlier job of the sweep already ran is taken from what that job kept (share_forward).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from mmseg.apis import inference_model

from featvis.data import images as inputs
from featvis.model.load import LoadedModel
from featvis.record.recorder import FeatureRecorder, flatten
from featvis.reduce.base import Reduced, Reduction
from featvis.sweep import shared_forward

log = logging.getLogger(__name__)


def first_pass(reduction: Reduction, loaded: LoadedModel, record: Callable[..., FeatureRecorder],
               samples: List[inputs.Sample]) -> None:
    """For a reduction that needs_first_pass: show it every map of every image (`observe`), then `fit`."""
    with record(reduction.observe) as recorder:
        for item in inputs.iter_loaded(samples, []):  # decoding problems are reported by the main pass
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
        # uses_gradients (Grad-CAM): the reduction hooks the layers itself
        self.recorder: Optional[FeatureRecorder] = None if reduction.uses_gradients else recorder
        self.forwards = self.reused = 0

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
            own = self.reduction.run_model(item.image_bgr, self.layers)
            return own.sample, {name: [reduced] for name, reduced in own.maps.items()}
        kept = self.sharing.take(item.sample.image_path) if self.sharing else None
        if kept is not None:
            self.reused += 1
            sample, by_layer = kept
            return sample, flatten(by_layer, self.own)
        sample = inference_model(self.model, item.image_bgr)
        self.forwards += 1
        by_layer = self.recorder.pop_layers()
        if self.sharing is not None:
            self.sharing.keep(item.sample.image_path, sample, by_layer, self.recorder.skipped)
        return sample, flatten(by_layer, self.own)

