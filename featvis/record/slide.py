"""Slide inference: one map per layer, stitched from the windows in image coordinates.

With `test_cfg.mode == 'slide'` (SegFormer on Cityscapes, for example) mmseg runs the
whole network once per window and averages the windows' logits where they overlap.
A hooked layer therefore fires once per window; drawing each call over the whole
image cuts the map into pieces (mmseg issue 3234). featvis places each window's map at
the window's position, scaled to the layer's resolution, and averages overlaps the way
mmseg averages logits (sum / count). Channels are reduced after stitching, so that
select_max and topk pick the same channels over the whole image.

A layer whose map is constant over space in every window (a global-pooling branch: a
1x1 map, or one broadcast back to the window's size, as PSPNet's pool scale 1) has one
value per window, not a map: stitched, those few values would be drawn as a smooth
gradient between window centres. Such a layer (`Stitcher.per_window`) is reported as
PER_WINDOW_NOTE and handed on as a constant map (each channel its average over the
windows), which is not coloured, the way a whole-image global-pooling map is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

CONSTANT_RTOL = 1e-5  # a map whose range is below this fraction of its magnitude is constant
PER_WINDOW_NOTE = "global pooling: one value per slide window, not drawn as a map"

Window = Tuple[int, int, int, int]  # y1, y2, x1, x2 in input pixels


@dataclass(frozen=True)
class SlideWindows:
    crop: Tuple[int, int]  # (h, w)
    stride: Tuple[int, int]  # (h, w)

    def windows(self, h_img: int, w_img: int) -> List[Window]:
        """The windows of an h_img x w_img input, in the order mmseg's slide_inference visits them."""
        (h_crop, w_crop), (h_stride, w_stride) = self.crop, self.stride
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        out = []
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                out.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
        return out


def slide_windows(model: Any) -> Optional[SlideWindows]:
    """The model's slide geometry, or None when it infers on the whole image."""
    test_cfg = getattr(model, "test_cfg", None) or {}
    if test_cfg.get("mode") != "slide":
        return None
    return SlideWindows(tuple(test_cfg["crop_size"]), tuple(test_cfg["stride"]))


class Stitcher:
    """Accumulates one layer's (B, C, h, w) window maps into a map of the whole input."""

    def __init__(self, input_hw: Tuple[int, int]) -> None:
        self.input_hw = input_hw
        self.total: Optional[torch.Tensor] = None
        self.count: Optional[torch.Tensor] = None
        self.windows = 0  # windows added
        self.window_constant = True  # every window's map so far was constant over space, in every channel

    def add(self, fmap: torch.Tensor, window: Window) -> None:
        y1, y2, x1, x2 = window
        h, w = fmap.shape[-2:]
        sy, sx = h / (y2 - y1), w / (x2 - x1)  # the layer's resolution relative to the input
        if self.total is None:
            size = (round(self.input_hw[0] * sy), round(self.input_hw[1] * sx))
            self.total = fmap.new_zeros(fmap.shape[:2] + size, dtype=torch.float32)
            self.count = fmap.new_zeros(size, dtype=torch.float32)
        top = min(round(y1 * sy), self.total.shape[-2] - h)
        left = min(round(x1 * sx), self.total.shape[-1] - w)
        self.total[..., top:top + h, left:left + w] += fmap.float()
        self.count[top:top + h, left:left + w] += 1
        self.windows += 1
        if self.window_constant:  # once a window varies, never checked again
            self.window_constant = spatially_constant(fmap)

    def stitched(self) -> torch.Tensor:
        """The average over the windows that cover each position: (B, C, H, W)."""
        return self.total / self.count.clamp(min=1)

    @property
    def per_window(self) -> bool:
        """One value per window: several windows, each constant over space, whose values differ."""
        return self.windows > 1 and self.window_constant and not spatially_constant(self.stitched())

    @property
    def note(self) -> Optional[str]:
        """What the caption of this layer says: PER_WINDOW_NOTE for `per_window`, else None."""
        return PER_WINDOW_NOTE if self.per_window else None

    def result(self) -> torch.Tensor:
        """The stitched map (B, C, H, W); for `per_window`, each channel is its average over the
        positions the windows cover, a constant map (it has no spatial extent to draw)."""
        stitched = self.stitched()
        if not self.per_window:
            return stitched
        covered = (self.count > 0).to(stitched.dtype)
        mean = (stitched * covered).sum(dim=(-2, -1), keepdim=True) / covered.sum()
        return mean.expand_as(stitched).contiguous()


def spatially_constant(fmap: torch.Tensor) -> bool:
    """Whether every channel of a (..., h, w) map is one value over space (up to float rounding,
    CONSTANT_RTOL, which featvis.render.scales.is_constant uses too); a map with NaN or Inf is not."""
    if fmap.shape[-2] * fmap.shape[-1] <= 1:
        return True
    flat = fmap.detach().flatten(-2).float()
    lo, hi = flat.amin(-1), flat.amax(-1)
    return bool(((hi - lo) <= CONSTANT_RTOL * torch.maximum(lo.abs(), hi.abs())).all())
