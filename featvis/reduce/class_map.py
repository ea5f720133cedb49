"""class_map: the layer weighted by the segmentation head's classifier for one class.

Also what every reduction that needs_class uses: `resolve_class` (a name or an index ->
the class index, or a one-line ReductionError listing the classes).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

from featvis.errors import ReductionError
from featvis.reduce.base import Reduced, Reduction
from featvis.reduce.options import ClassMapConfig


@dataclass
class ClassWeights:
    """Row `index` of decode_head.conv_seg, for class_map."""

    weight: torch.Tensor  # (C,) float32 on the CPU
    bias: float
    name: str  # the class's name
    index: int  # the class's index
    conv_seg_input: Optional[str]  # a layer whose output feeds conv_seg (for hints), when known


class ClassMap(Reduction):
    """The class's logit at every pixel: sum_c W[k, c] * feat[c] + b[k] -> (1, H, W), signed.

    W[k], b[k] are row k of the segmentation head's 1x1 classifier (decode_head.conv_seg),
    as `class_weights` returns them; positive = evidence for the class. This is a
    gradient-free class activation map; at the layer that feeds conv_seg it equals
    mmseg's class-k logit before upsampling (dropout is off at inference).
    """

    name = "class_map"
    config_class = ClassMapConfig
    needs_class = True
    fits_some_layers = True  # the layers whose output feeds conv_seg: `apply` checks C on the first image

    def __init__(self, config: ClassMapConfig, model: Optional[nn.Module] = None) -> None:
        super().__init__(config, model)
        if model is None:
            raise ReductionError("reduction=class_map needs the model's classifier: build it with the model")
        self.weights = class_weights(model, config.target_class, model_classes(model))

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        weight = self.weights.weight.reshape(-1).to(feat)
        if feat.shape[0] != weight.shape[0]:
            hint = f", such as {self.weights.conv_seg_input}" if self.weights.conv_seg_input else ""
            raise ReductionError(f"class_map applies to layers whose output feeds decode_head.conv_seg "
                                 f"(C={weight.shape[0]}){hint}; this layer has C={feat.shape[0]}: "
                                 f"fix layers.names")
        cam = torch.einsum("c,chw->hw", weight, feat) + float(self.weights.bias)
        return Reduced(cam[None], None, f"class {self.weights.name}")


def model_classes(model: nn.Module) -> Sequence[str]:
    """The class names of a loaded model (`dataset_meta["classes"]`, set by featvis.model.load)."""
    return (getattr(model, "dataset_meta", None) or {}).get("classes") or []


def resolve_class(target_class: Union[None, str, int], classes: Sequence[str]) -> int:
    """A class name (exact, else case-insensitive) or an index (as an int or a digit string) -> index."""
    listing = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    if target_class is None or (isinstance(target_class, str) and not target_class.strip()):
        raise ReductionError("this reduction needs a class: set reduction.target_class=<name or index> "
                             f"(classes: {listing})")
    text = str(target_class).strip()
    if text in classes:
        return list(classes).index(text)
    lowered = [str(name).lower() for name in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(classes):
            return index
        raise ReductionError(f"reduction.target_class={text} is out of range: the model has {len(classes)} "
                             f"classes ({listing})")
    close = difflib.get_close_matches(text, [str(c) for c in classes], n=3)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ReductionError(f"reduction.target_class={text!r} is not a class of the model{hint}; "
                         f"use a name or an index: {listing}")


def conv_seg(model: nn.Module) -> nn.Conv2d:
    """The segmentation head's classifier, decode_head.conv_seg (a 1x1 Conv2d)."""
    head = getattr(model, "decode_head", None)
    if isinstance(head, nn.ModuleList):  # CascadeEncoderDecoder: the last head predicts
        head = head[-1]
    layer = getattr(head, "conv_seg", None)
    if not isinstance(layer, nn.Conv2d) or tuple(layer.kernel_size) != (1, 1):
        raise ReductionError("class_map needs a decode_head.conv_seg 1x1 convolution, which this model "
                             "lacks: use another reduction")
    return layer


_CONV_SEG_INPUTS = ("bottleneck", "fpn_bottleneck", "fusion_conv", "conv_cat", "convs", "dropout")


def conv_seg_input(model: nn.Module) -> Optional[str]:
    """The name of a module whose output feeds conv_seg (bottleneck for PSPNet), when known.

    Looks for the usual mmseg names among the head's children; the last convolution in
    them must output conv_seg's in_channels. `decode_head.dropout` (when the head has
    dropout) always qualifies: conv_seg is applied to its output.
    """
    head = getattr(model, "decode_head", None)
    if head is None or isinstance(head, nn.ModuleList):
        return None
    in_channels = conv_seg(model).in_channels
    for attr in _CONV_SEG_INPUTS:
        module = getattr(head, attr, None)
        if not isinstance(module, nn.Module):
            continue
        if isinstance(module, nn.Dropout2d) or attr == "dropout":
            return f"decode_head.{attr}"
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if convs and convs[-1].out_channels == in_channels:
            return f"decode_head.{attr}"
    return None


def class_weights(model: nn.Module, target_class: Union[None, str, int], classes: Sequence[str]) -> ClassWeights:
    """conv_seg's row for `target_class` (a class name or index, e.g. from the config).

    Raises ReductionError (one line, listing the classes) for an unknown class.
    """
    index = resolve_class(target_class, classes)
    layer = conv_seg(model)
    if index >= layer.out_channels:
        raise ReductionError(f"class {index} ({classes[index]}) is beyond the {layer.out_channels} outputs "
                             "of decode_head.conv_seg")
    weight = layer.weight.detach()[index, :, 0, 0].float().cpu().clone()
    bias = float(layer.bias.detach()[index]) if layer.bias is not None else 0.0
    return ClassWeights(weight, bias, str(classes[index]), index, conv_seg_input(model))
