"""gradcam: Grad-CAM for one class of the predicted mask (whole-inference models only).

Not a per-map reduction: it needs the gradient of the prediction, which a forward hook
lacks, so it uses_gradients and runs the model itself on each image (`run_model`, with
the forward and backward machinery of featvis.record.gradcam).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from featvis.errors import ReductionError
from featvis.record.gradcam import check_supported, gradcam_maps
from featvis.reduce.base import ModelPass, Reduced, Reduction
from featvis.reduce.class_map import model_classes, resolve_class
from featvis.reduce.options import GradcamConfig


class Gradcam(Reduction):
    """Grad-CAM of each layer for the class: ReLU(sum_c mean(dTarget/dA_c) * A_c), (1, h, w)."""

    name = "gradcam"
    config_class = GradcamConfig
    needs_class = True
    uses_gradients = True

    def __init__(self, config: GradcamConfig, model: Optional[nn.Module] = None) -> None:
        super().__init__(config, model)
        if model is None:
            raise ReductionError("reduction=gradcam runs the model itself: build it with the model")
        check_supported(model)  # slide inference is refused before the class is looked at
        self.model = model
        self.target_class = resolve_class(config.target_class, model_classes(model))

    def run_model(self, image_bgr: np.ndarray, layers: Sequence[Any]) -> ModelPass:
        result = gradcam_maps(self.model, image_bgr, layers, self.target_class)
        return ModelPass(result.sample, result.maps)

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        """Refused: Grad-CAM needs the gradient of the prediction, which a forward hook lacks."""
        raise ReductionError("reduction=gradcam cannot run in a forward hook: it runs the model itself "
                             "(featvis.record.gradcam.gradcam_maps)")
