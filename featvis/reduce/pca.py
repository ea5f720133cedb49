"""pca_rgb: the first three principal components of the channel vectors, drawn as R, G, B.

Per map by default; with `reduction.shared_basis=true` one basis per layer is fitted over
every image of the run in a first pass, so colours mean the same in every image. The
fitting maths is in featvis.reduce.pca_basis.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from featvis.errors import ReductionError
from featvis.reduce.base import Reduced, Reduction
from featvis.reduce.options import PcaRgbConfig
from featvis.reduce.pca_basis import (
    PCA_EXACT_CHANNELS,
    PCA_PIXELS,
    PcaBases,
    PcaBasis,
    PcaFit,
    fit_one_map,
    project,
    scale,
)


class PcaRgb(Reduction):
    """(3, H, W) in [0, 1]: pixel coordinates on the first three components (see `pca_rgb`)."""

    name = "pca_rgb"
    config_class = PcaRgbConfig
    draws_rgb = True

    def __init__(self, config: PcaRgbConfig, model: Optional[nn.Module] = None, *,
                 max_pixels: int = PCA_PIXELS, exact_channels: int = PCA_EXACT_CHANNELS) -> None:
        super().__init__(config, model)
        self.max_pixels, self.exact_channels = max_pixels, exact_channels
        self.bases: Optional[PcaBases] = (PcaBases(max_pixels=max_pixels, exact_channels=exact_channels)
                                          if config.shared_basis else None)

    @classmethod
    def needs_first_pass(cls, config: PcaRgbConfig) -> bool:
        return bool(config.shared_basis)  # its basis is fitted over the job's own images and layers

    def observe(self, feat: torch.Tensor, layer: str = "") -> Reduced:
        if self.bases is None:
            return super().observe(feat, layer)
        return self.bases.update(feat, layer)

    def fit(self) -> None:
        if self.bases is None:
            return super().fit()
        self.bases.fit()

    def observed(self) -> Dict[str, Dict[str, np.ndarray]]:
        if self.bases is None:
            return super().observed()
        return self.bases.state()

    def fit_on(self, observed: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> None:
        if self.bases is None:
            return super().fit_on(observed)
        self.bases = PcaBases(max_pixels=self.max_pixels, exact_channels=self.exact_channels)
        for part in observed:
            self.bases.merge(part)
        self.bases.fit()

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return pca_rgb(feat, basis=self.bases, layer=layer, max_pixels=self.max_pixels,
                       exact_channels=self.exact_channels)


def pca_rgb(feat: torch.Tensor, basis: Union[None, PcaBasis, PcaFit, Mapping[str, PcaBasis]] = None,
            layer: Optional[str] = None, max_pixels: int = PCA_PIXELS,
            exact_channels: int = PCA_EXACT_CHANNELS) -> Reduced:
    """The first three principal components of the map's channel vectors, as R, G, B.

    Returns maps (3, H, W) in [0, 1]: map k is pixel coordinates on component k, which
    the renderer draws directly as colour channel k (R, G, B), without further scaling.
    `note` says how much of the variance the three components explain.

    - basis=None: the components are fitted on this map alone (centred; exact eigh of the
      covariance of at most `max_pixels` seeded-subsampled pixels when C <= exact_channels,
      a seeded randomized subspace iteration above). Each component is scaled so that its
      1st percentile is 0 and its 99th is 1 (clipped): colours are comparable across the
      three channels, but not across images.
    - basis=PcaBasis (fitted; see PcaBasis) or a PcaBases mapping with `layer`: the shared
      components and ranges are used, so colours are comparable across images.

    The sign of each component is fixed: its largest-magnitude loading is positive.
    Components without variance (C < 3, a constant map, or only float rounding: see
    FLAT_RELATIVE) are drawn at 0.5 instead of as stretched noise.
    """
    if isinstance(basis, Mapping):
        if layer is None or layer not in basis:
            raise ReductionError(f"pca_rgb shared basis: no basis for layer {layer!r}; the first pass "
                                 "must update a basis for every drawn layer")
        basis = basis[layer]
    if isinstance(basis, PcaBasis):
        if basis.channels is not None and basis.channels != feat.shape[0]:
            raise ReductionError(f"pca_rgb shared basis: the map has {feat.shape[0]} channels, its basis "
                                 f"{basis.channels}; keep one basis per layer")
        fit = basis.fitted or basis.fit()
    elif isinstance(basis, PcaFit):
        fit = basis
    else:
        fit = fit_one_map(feat, max_pixels, exact_channels)
    maps = scale(project(feat, fit.mean, fit.components), fit.lo, fit.hi)
    return Reduced(maps, None, f"PC1-3 {100 * fit.explained:.0f}% of variance")
