"""Channel picks and per-pixel statistics over channels: cheap reductions without a model.

- select_max:   the one channel with the largest spatial sum (MMEngine's select_max);
- squeeze_mean: the mean over channels (MMEngine's squeeze_mean);
- topk:         the `topk` channels with the largest spatial sums, drawn as a grid;
- channel_max:  per pixel, the largest value over channels (K=1);
- l2_norm:      per pixel, the L2 norm of the channel vector (K=1).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from featvis.errors import ConfigError
from featvis.reduce.base import Reduced, Reduction
from featvis.reduce.options import TopkConfig


def _channel_sums(feat: torch.Tensor) -> torch.Tensor:
    return feat.sum(dim=(1, 2))


class SelectMax(Reduction):
    """The channel with the largest spatial sum: (1, H, W)."""

    name = "select_max"

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        channel = int(torch.argmax(_channel_sums(feat)))
        return Reduced(feat[channel:channel + 1], [channel])


class SqueezeMean(Reduction):
    """The mean over channels: (1, H, W)."""

    name = "squeeze_mean"

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return Reduced(feat.mean(dim=0, keepdim=True))


class Topk(Reduction):
    """The `topk` channels with the largest spatial sums (fewer when C < topk): (k, H, W)."""

    name = "topk"
    config_class = TopkConfig
    render_only = frozenset({"arrangement"})

    @classmethod
    def check_options(cls, config: TopkConfig) -> None:
        if config.topk < 1:
            raise ConfigError(f"reduction.topk={config.topk} must be at least 1")
        if len(config.arrangement) != 2 or min(config.arrangement) < 1:
            raise ConfigError(f"reduction.arrangement={list(config.arrangement)} must be [rows, cols], both >= 1")
        if config.arrangement[0] * config.arrangement[1] < config.topk:
            raise ConfigError(f"reduction.arrangement={list(config.arrangement)} has fewer cells than "
                              f"reduction.topk={config.topk}: enlarge it or lower topk")

    @classmethod
    def layout(cls, config: TopkConfig) -> Optional[Tuple[int, int]]:
        rows, cols = config.arrangement
        return rows, cols

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        k = min(self.config.topk, feat.shape[0])
        channels = torch.topk(_channel_sums(feat), k).indices
        return Reduced(feat[channels], channels.tolist())


class ChannelMax(Reduction):
    """Per pixel, the largest value over the channels: (1, H, W)."""

    name = "channel_max"

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return Reduced(feat.amax(dim=0, keepdim=True))


class L2Norm(Reduction):
    """Per pixel, the Euclidean norm of its C-vector: (1, H, W), >= 0."""

    name = "l2_norm"

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return Reduced(torch.linalg.vector_norm(feat, ord=2, dim=0, keepdim=True))
