"""std: per pixel, the standard deviation over channels (how much the channels disagree)."""

from __future__ import annotations

import torch

from featvis.reduce.base import Reduced, Reduction


class Std(Reduction):
    """Per pixel, the population standard deviation (divide by C) over channels: (1, H, W), >= 0."""

    name = "std"  # reduction=std; conf/reduction/std.yaml

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return Reduced(feat.std(dim=0, correction=0, keepdim=True))
