"""Grad-CAM of chosen layers for one class of the predicted mask (Selvaraju et al., 2017).

    result = gradcam_maps(model, image_bgr, layers, target_class=1)
    result.maps      # {sub-name: Reduced(maps (1, h, w) >= 0)}, in the user's layer order
    result.sample    # the prediction (SegDataSample), as mmseg's inference_model returns it

One forward pass with gradients, prepared exactly as `mmseg.apis.inference_model` does
(`_preprare_data`, the model's data_preprocessor, `model.inference`), with forward hooks
on the selected layers. The target is the sum of the class-k logits over the pixels the
model predicts as k (segmentation Grad-CAM, as in pytorch-grad-cam's
SemanticSegmentationTarget); when no pixel is predicted as k, the sum over all pixels
(`result.all_pixels` says so). The gradients of that target with respect to each layer's
output A (C, h, w) are taken with `torch.autograd.grad`, so no `.grad` is ever written
to the model's parameters, and

    CAM = ReLU(sum_c mean_hw(dTarget/dA_c) * A_c)        (1, h, w)

at the layer's own resolution, over the model's input (resized and padded as the test
pipeline did), like every map the recorder records: the renderer undoes that with
`result.sample.metainfo`.

Layer outputs are handled as featvis.record.recorder does (same picks, same sub-names:
`name[i]`, `name:key`, `name#2` for a second call; (B, N, C) tokens are turned into maps).
Each hooked output is passed on as a copy, so that an in-place operation after the layer
(an inplace ReLU) cannot change the activation whose gradient is taken. Hooks are removed
on every exit path. Whole inference only: slide-mode models raise ReductionError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch

# Private (and misspelt upstream), on purpose: the exact preparation mmseg's inference_model
# does (test pipeline, packing), which Grad-CAM needs before its own forward with gradients.
# tests/test_private_apis.py pins it.
from mmseg.apis.inference import _preprare_data
from torch import nn

from featvis.errors import ReductionError
from featvis.record import capture
from featvis.record.hooks import HookSet
from featvis.record.layers import Selected
from featvis.record.recorded import Reduced
from featvis.record.recorder import pick_output
from featvis.record.tokens import token_grid, tokens_to_map


@dataclass
class GradCamResult:
    maps: Dict[str, Reduced]  # sub-name -> Reduced(maps (1, h, w) float32 CPU, >= 0), user's order
    sample: Any  # SegDataSample: pred_sem_seg and seg_logits, as inference_model returns them
    target_class: int
    target_pixels: int  # pixels predicted as target_class (at the model's input resolution)
    all_pixels: bool  # True: no pixel was predicted as the class, so the target summed all pixels
    skipped: Dict[str, str] = field(default_factory=dict)  # sub-name -> why it has no map
    note: str = ""  # for captions: "Grad-CAM circle (1840 px predicted)"


def check_supported(model: nn.Module) -> None:
    """Raise ReductionError (one line) when Grad-CAM cannot run on `model`: slide inference."""
    test_cfg = getattr(model, "test_cfg", None) or {}
    if test_cfg.get("mode", "whole") == "slide":
        raise ReductionError("reduction=gradcam supports whole inference only for now; this model uses "
                             "test_cfg.mode='slide': use another reduction (e.g. class_map)")


def gradcam_maps(model: nn.Module, image_bgr: np.ndarray, layers: Sequence[Selected],
                 target_class: int) -> GradCamResult:
    """Grad-CAM of `layers` for class index `target_class` on one BGR image (H, W, 3 uint8).

    `layers` come from featvis.record.layers.select_layers; `model` is an eval-mode mmseg
    segmentor in whole-inference mode. Must not be called under torch.inference_mode().
    """
    check_supported(model)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradcam_maps needs autograd: do not call it under torch.inference_mode()")
    classes = (getattr(model, "dataset_meta", None) or {}).get("classes") or []
    class_name = str(classes[target_class]) if 0 <= target_class < len(classes) else str(target_class)

    captured: List[_Output] = []
    calls = capture.Calls()  # name, name#2: as the recorder names a layer's calls

    def hook_for(layer: Selected, index: int):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            name = calls.name(layer.name)
            picked = pick_output(output, layer.pick, layer.module_name)
            captured.append(_Output(index, name, picked, capture.hints(args, output)))
            return _copy_tensors(output)
        return hook

    with HookSet() as hooks:  # removed on every exit path
        for index, layer in enumerate(layers):
            hooks.add(layer.module.register_forward_hook(hook_for(layer, index)))
        data, _ = _preprare_data(image_bgr, model)
        with torch.enable_grad():
            data = model.data_preprocessor(data, False)
            inputs, samples = data["inputs"], data["data_samples"]
            metas = [s.metainfo for s in samples]
            seg_logits = model.inference(inputs, metas)

    num_classes = seg_logits.shape[1]
    if not 0 <= target_class < num_classes:
        raise ReductionError(f"reduction.target_class={target_class} is out of range: the model predicts "
                             f"{num_classes} classes")
    logits = _unpad(seg_logits, metas[0])[0]  # (K, H, W), the padding removed as mmseg does
    predicted = logits.detach().argmax(dim=0) == target_class
    target_pixels = int(predicted.sum())
    class_logits = logits[target_class]
    target = class_logits[predicted].sum() if target_pixels else class_logits.sum()

    aspect = inputs.shape[-2] / inputs.shape[-1]
    outputs, skipped = _flatten(captured)
    for layer in layers:
        if not calls.ran(layer.name):
            skipped[layer.name] = "did not run at inference (no forward hook fired)"
    outputs.sort(key=lambda out: out.index)  # the user's layer order; calls in forward order
    grads = torch.autograd.grad(target, [out.value for out in outputs], allow_unused=True) if outputs else ()
    note = f"Grad-CAM {class_name} " + (f"({target_pixels} px predicted)" if target_pixels
                                         else "(none predicted: all pixels)")
    maps: Dict[str, Reduced] = {}
    with torch.no_grad():
        for out, grad in zip(outputs, grads):
            if grad is None:
                skipped[out.name] = f"does not influence the logits of class {class_name}"
                continue
            act, grad = out.value.detach(), grad.detach()
            if act.dim() == 3:  # (B, N, C) tokens
                grid = token_grid(act.shape[1], out.hints, aspect)
                if grid is None:
                    skipped[out.name] = f"cannot tell the (H, W) grid of its {act.shape[1]} tokens"
                    continue
                act, grad = tokens_to_map(act, grid), tokens_to_map(grad, grid)
            if act.dim() != 4:
                skipped[out.name] = f"output of shape {tuple(act.shape)} is not a (B, C, H, W) map"
                continue
            weights = grad.float().mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * act.float()).sum(dim=1))[:1]  # (1, h, w): the one image
            maps[out.name] = Reduced(cam.cpu().clone(), None, note)
        sample = model.postprocess_result(seg_logits.detach(), samples)[0]
    return GradCamResult(maps, sample, target_class, target_pixels, target_pixels == 0, skipped, note)


class _Output(NamedTuple):
    index: int  # position of its layer in `layers`
    name: str  # sub-name, as the recorder names it
    value: Any  # the (picked) output: a tensor, or a tuple / list / dict of them
    hints: List[Any]  # what token_grid may read the (H, W) of tokens from


def _flatten(captured: List[_Output]) -> Tuple[List[_Output], Dict[str, str]]:
    """Every tensor of the captured outputs, under the recorder's sub-names (`name[i]`, `name:key`)."""
    tensors: List[_Output] = []
    skipped: Dict[str, str] = {}
    for out in captured:
        for name, tensor, why in capture.tensors(out.value, out.name):
            if tensor is None:
                skipped[name] = why
            elif tensor.requires_grad:
                tensors.append(out._replace(name=name, value=tensor))
            else:
                skipped[name] = "output carries no gradient"
    return tensors, skipped


def _copy_tensors(output: Any) -> Any:
    """The output with every tensor cloned (tuple, list and dict rebuilt); anything else as is."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if type(output) in (tuple, list):
        return type(output)(_copy_tensors(item) for item in output)
    if type(output) is dict:
        return {key: _copy_tensors(item) for key, item in output.items()}
    return output


def _unpad(seg_logits: torch.Tensor, meta: Dict[str, Any]) -> torch.Tensor:
    """Crop the padding the data preprocessor added, as BaseSegmentor.postprocess_result does."""
    padding = meta.get("img_padding_size", meta.get("padding_size", [0, 0, 0, 0]))
    left, right, top, bottom = padding
    h, w = seg_logits.shape[-2:]
    return seg_logits[..., top:h - bottom, left:w - right]
