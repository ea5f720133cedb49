"""Channel reductions: one (C, H, W) feature map -> the (K, H, W) maps that get drawn.

Each reduction is a small function registered by name in REDUCTIONS, with MMEngine's
`draw_featmap` semantics:

- select_max:   the one channel with the largest spatial sum (not the largest pixel);
- squeeze_mean: the mean over channels;
- topk:         the `topk` channels with the largest spatial sums, drawn as a grid.

They run inside the forward hook, so what the recorder keeps is K maps, never C.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch


@dataclass
class Reduced:
    maps: torch.Tensor  # (K, H, W) float32 on the CPU
    channels: Optional[List[int]] = None  # the channels kept, for captions (None: a mix of all)


Reduction = Callable[..., Reduced]
REDUCTIONS: Dict[str, Reduction] = {}


def register(name: str) -> Callable[[Reduction], Reduction]:
    def add(fn: Reduction) -> Reduction:
        REDUCTIONS[name] = fn
        return fn
    return add


def _channel_sums(feat: torch.Tensor) -> torch.Tensor:
    return feat.sum(dim=(1, 2))


@register("select_max")
def select_max(feat: torch.Tensor, **_: object) -> Reduced:
    channel = int(torch.argmax(_channel_sums(feat)))
    return Reduced(feat[channel:channel + 1], [channel])


@register("squeeze_mean")
def squeeze_mean(feat: torch.Tensor, **_: object) -> Reduced:
    return Reduced(feat.mean(dim=0, keepdim=True))


@register("topk")
def topk(feat: torch.Tensor, topk: int = 4, **_: object) -> Reduced:
    k = min(topk, feat.shape[0])
    channels = torch.topk(_channel_sums(feat), k).indices
    return Reduced(feat[channels], channels.tolist())


def reduce(name: str, feat: torch.Tensor, **options: object) -> Reduced:
    """Apply reduction `name` to a (C, H, W) map; the result is float32, detached, on the CPU.

    The result is a copy, never a view: a view would keep the whole C x H x W storage alive.
    """
    out = REDUCTIONS[name](feat.detach().float(), **options)
    out.maps = out.maps.cpu().clone()
    return out
