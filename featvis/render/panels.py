"""One image's panels: input, ground truth, prediction and one picture per recorded layer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from featvis.record.recorded import Recorded
from featvis.record.slide import PER_WINDOW_NOTE
from featvis.reduce.base import Reduced, Reduction
from featvis.render.heatmap import overlay_maps, overlay_rgb
from featvis.render.labels import overlay_labels
from featvis.render.panel import LabelMaps, Panel
from featvis.render.scales import ScaleRule, SharedRange, describe, is_constant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrawStyle:
    """How a job draws its pictures: the parts of its config the render stage reads."""

    alpha: float  # weight of the heat map over the image
    scale: ScaleRule  # colour scales (normalize.mode, range, percentiles, colormap)
    scale_bar: bool  # draw each map's colour scale below it
    reduction: Reduction  # its traits say how its maps are drawn (draws_rgb, layout)
    dataset_meta: Mapping[str, Any]  # the model's classes and palette
    weights_note: Optional[str] = None  # model.strict=false, checkpoint did not fit: in every map's caption


def make_panels(style: DrawStyle, recorded: Recorded, warned: Set[Tuple[str, str]],
                shared: Optional[Dict[str, SharedRange]] = None) -> List[Panel]:
    """One image's panels, in drawing order: input, ground truth (if any), prediction, the layers.

    The input carries the label maps and class names (`Panel.labels`), which W&B draws as
    interactive masks; feature maps carry `layer` and `stats`. `shared`: each layer's range
    over the run (normalize.mode=shared).
    """
    item, sample = recorded.item, recorded.sample
    palette = style.dataset_meta["palette"]
    stem, image = item.sample.stem, item.image_rgb
    pred = sample.pred_sem_seg.data[0].cpu().numpy()
    masks = LabelMaps(prediction=pred, ground_truth=item.gt, class_names=tuple(style.dataset_meta["classes"]))
    panels = [Panel("input", image, stem, labels=masks)]
    if item.gt is not None:
        gt_caption = " | ".join([f"{stem} ground truth", *([item.gt_note] if item.gt_note else [])])
        panels.append(Panel("ground_truth", overlay_labels(item.gt, image, palette, 0.5), gt_caption))
    weights = [style.weights_note] if style.weights_note else []
    panels.append(Panel("prediction", overlay_labels(pred, image, palette, 0.5),
                        " | ".join([f"{stem} prediction", *weights])))
    reduction = style.reduction
    for layer, per_item in recorded.maps.items():
        reduced: Reduced = per_item[0]  # one image per forward
        caption = " | ".join([panel_caption(stem, layer, reduction.name, reduced, warned), *weights])
        if reduction.draws_rgb:  # three maps drawn as R, G, B (pca_rgb)
            picture = image.copy() if _per_window(reduced) else overlay_rgb(reduced.maps, image, sample.metainfo,
                                                                            style.alpha)
            panels.append(Panel(f"featmap/{layer}", picture, caption, layer=layer, stats=reduced.stats))
            continue
        labels = [f"ch {c}" for c in reduced.channels] if reduced.channels and len(reduced.channels) > 1 else None
        rule = replace(style.scale, shared=shared[layer].range()) if shared else style.scale
        drawn = overlay_maps(reduced.maps, image, sample.metainfo, style.alpha, reduction.layout(reduction.config),
                             labels, scale=rule, scale_bar=style.scale_bar)
        described = sorted({describe(s) for s in drawn.scales if s is not None})
        panels.append(Panel(f"featmap/{layer}", drawn.picture, " | ".join([caption, *described]),
                            layer=layer, stats=reduced.stats))
    return panels


def panel_caption(stem: str, layer: str, reduction: str, reduced: Reduced, warned: Set[Tuple[str, str]]) -> str:
    """`image | layer 1/8 | reduction ch N` (1/8: the map's stride), plus what is wrong with the values,
    warned once per layer."""
    channels = f" ch {reduced.channels[0]}" if reduced.channels and len(reduced.channels) == 1 else ""
    notes = []
    values = reduced.maps.numpy()
    if not np.isfinite(values).all():
        notes.append("NaN/Inf present, drawn as the minimum")
    if _per_window(reduced):  # slide inference, global pooling: the note says it (warned here, once)
        notes.append(PER_WINDOW_NOTE)
    elif any(is_constant(m) for m in values):
        notes.append("constant map, not coloured")
    for note in notes:
        if (layer, note) not in warned:
            warned.add((layer, note))
            log.warning("%s (first seen on %s): %s", layer, stem, note)
    if reduced.note:
        notes = [n for n in notes if n != PER_WINDOW_NOTE]
        notes.insert(0, reduced.note)
    return " | ".join([stem, layer + stride_text(reduced.stride), f"{reduction}{channels}", *notes])


def stride_text(stride: Optional[float]) -> str:
    """` 1/8` for a map one eighth of the input's size (` 1/7.5` off the integers, ` x2` above it)."""
    if not stride or stride <= 0:
        return ""
    if stride < 1:
        return f" x{1 / stride:.3g}"
    return f" 1/{round(stride)}" if abs(stride - round(stride)) < 0.05 * stride else f" 1/{stride:.3g}"


def _per_window(reduced: Reduced) -> bool:
    """A slide-inference map with one value per window (featvis.record.slide), not a map."""
    return PER_WINDOW_NOTE in (reduced.note or "")

