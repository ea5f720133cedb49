"""Layer presets derived from the model's structure: `layers=backbone|neck|decoder|auxiliary|dense`.

Every mmseg 1.x segmentor (EncoderDecoder, CascadeEncoderDecoder,
MultimodalEncoderDecoder) is a backbone (SAN's is `image_encoder`), an optional neck
and one decode head (or a cascade of them), with an optional auxiliary head. The
presets are read off that structure, so any config works with no YAML:

    backbone    the backbone: one map per stage it returns (its output tuple; a ViT's
                `[map, cls_token]` pairs give the map, the class token is no map)
    neck        the neck: one map per output (FPN, JPU, ICNeck, MLANeck, ...)
    decoder     for each decode head (each head of a cascade), its parts that run at
                inference, in the order they run, then the feature that enters the
                classifier (`conv_seg/input`, left out where it is the very tensor a
                part already gave, as PSPNet's bottleneck) and the class logits (`conv_seg`)
    auxiliary   the same for the auxiliary head(s), which featvis runs on the backbone's
                features (featvis.record.auxiliary): mmseg runs them only in training
    dense       every convolution that runs

A head's *parts* are its child modules, with containers (ModuleList, ModuleDict) opened
into their elements, leaving out the classifier itself, dropout, the losses and positional
encodings (the same whatever the image). Heads with no final `conv_seg` (Mask2Former,
MaskFormer, KNet, Segmenter, SAN) give their parts only: the per-pixel maps they make
(pixel decoder, mask features, Segmenter's class masks); their query embeddings are not
maps and are not drawn (a preset's token output is drawn only when its grid is known or
gives a power-of-two stride, see featvis.record.recorder). PointRend's point head works on sampled points, not maps:
it is left out, the FPN head before it is drawn.

Layers that come from a preset are *optional*: one that does not run on this model (a
branch its config switches off) is left out without a word, and the listing does not tag
it. A model option can replace a preset with its own list (`model.layer_presets.<name>`).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.record.layers import Selected, select_layers

GENERIC = ("backbone", "neck", "decoder", "auxiliary", "dense")
CLASSIFIER = "conv_seg"
INPUT = "/input"  # a spec's suffix: what enters the module instead of what leaves it (featvis.record.layers)
NOT_PARTS = ("conv_seg", "dropout")  # a head's classifier and its dropout are not parts
NOT_MAP_HEADS = ("PointHead",)  # heads that work on sampled points: no maps to draw


def backbone_name(model: nn.Module) -> Optional[str]:
    """`backbone`, or SAN's `image_encoder`; None for a model with neither."""
    for name in ("backbone", "image_encoder"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    return None


def heads(model: nn.Module, attr: str) -> List[Tuple[str, nn.Module]]:
    """The decode (or auxiliary) heads: one, or every head of a ModuleList (a cascade)."""
    head = getattr(model, attr, None)
    if isinstance(head, nn.ModuleList) and not _runs_itself(head):
        return [(f"{attr}.{i}", h) for i, h in enumerate(head)]
    if isinstance(head, nn.Module):
        return [(attr, head)]
    return []


def _runs_itself(module: nn.Module) -> bool:
    """A container class with a forward of its own (PPM is a ModuleList that runs), or any other module."""
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        return type(module).forward is not nn.ModuleList.forward and type(module).forward is not nn.ModuleDict.forward
    return True


def parts(name: str, module: nn.Module) -> Iterator[str]:
    """`name`'s children, containers opened into their elements (recursively)."""
    for child, sub in module.named_children():
        full = f"{name}.{child}"
        if _runs_itself(sub):
            yield full
        else:
            yield from parts(full, sub)


def _is_part(child: str) -> bool:
    """Not the classifier, dropout, a loss, or a positional encoding (the same whatever the image)."""
    return child not in NOT_PARTS and not child.startswith("loss") and not any(
        word in child for word in ("positional", "pos_embed")) and not child.endswith("_pe")


def _is_head(module: nn.Module) -> bool:
    """A decode head (mmseg's BaseDecodeHead or any module with a `conv_seg` classifier and `num_classes`)."""
    return isinstance(getattr(module, CLASSIFIER, None), nn.Module) and hasattr(module, "num_classes")


def head_specs(name: str, head: nn.Module) -> List[str]:
    """A head's parts, then its classifier's input and output where it has a `conv_seg`.

    A part that is itself a head (KNet's kernel-generating FCN head, whose parent calls its
    parts directly) is opened the same way.
    """
    if type(head).__name__ in NOT_MAP_HEADS:
        return []
    children = dict(head.named_children())
    specs: List[str] = []
    for child, sub in children.items():
        if not _is_part(child):
            continue
        if _is_head(sub):
            specs += head_specs(f"{name}.{child}", sub)
        else:
            specs += [f"{name}.{child}"] if _runs_itself(sub) else list(parts(f"{name}.{child}", sub))
    if isinstance(children.get(CLASSIFIER), nn.Module):
        specs += [f"{name}.{CLASSIFIER}{INPUT}", f"{name}.{CLASSIFIER}"]
    return specs


def derive(model: nn.Module) -> Dict[str, List[str]]:
    """{preset: [layer specs]} for the generic presets this model has (no neck: no `neck`)."""
    found: Dict[str, List[str]] = {}
    backbone = backbone_name(model)
    if backbone:
        found["backbone"] = [backbone]
    if isinstance(getattr(model, "neck", None), nn.Module):
        found["neck"] = ["neck"]
    for preset, attr in (("decoder", "decode_head"), ("auxiliary", "auxiliary_head")):
        specs = [spec for name, head in heads(model, attr) for spec in head_specs(name, head)]
        if specs:
            found[preset] = specs
    found["dense"] = ["*@Conv2d"]
    return found


def available(model: nn.Module, refined: Mapping[str, Sequence[str]]) -> Dict[str, List[str]]:
    """Every preset of this model: the generic ones, replaced or added to by model.layer_presets."""
    return {**derive(model), **{k: list(v) for k, v in refined.items()}}


def resolve(model: nn.Module, preset: str, refined: Mapping[str, Sequence[str]]) -> List[str]:
    """The layer specs of `preset` on this model, or one line saying which presets it has."""
    presets = available(model, refined)
    if preset not in presets:
        why = {"neck": "it has no neck", "auxiliary": "it has no auxiliary head",
               "decoder": "its decode head has no parts that make maps"}.get(preset, "no such preset")
        raise LayerNotFoundError(f"layers={preset}: model {type(model).__name__} has no {preset!r} preset ({why}); "
                                 f"use one of {sorted(presets)}, or list names with layers.names=[...]")
    return presets[preset]


PRESET = "preset:"  # a layer request that stands for a preset, e.g. `preset:decoder` (sweep plans, results)


def requested(preset: Optional[str], names: Optional[Sequence[str]]) -> List[str]:
    """What a job asks for, before any model is built: its layer names, or its preset as `preset:<name>`."""
    return list(names) if names is not None else [f"{PRESET}{preset}"]


def select(model: nn.Module, requests: Sequence[str], refined: Mapping[str, Sequence[str]]) -> List[Selected]:
    """The layers of `requests` (specs, and `preset:<name>` for a preset's optional layers), in order."""
    chosen: Dict[Tuple[str, str, tuple], Selected] = {}
    for request in requests:
        if request.startswith(PRESET):
            found = select_layers(model, resolve(model, request[len(PRESET):], refined), optional=True)
        else:
            found = select_layers(model, [request])
        for layer in found:
            chosen.setdefault((layer.module_name, layer.port, layer.pick), layer)
    return list(chosen.values())
