"""pca_rgb's maths: PCA fits of channel vectors, one map at a time or streamed over many maps.

- `fit_one_map`: the top three components of one map's (subsampled) pixels, exact (eigh)
  up to PCA_EXACT_CHANNELS channels and a seeded randomized subspace iteration above,
  scaled by the map's own 1st and 99th percentiles;
- `PcaBasis`: one basis for one layer fitted over many maps from streaming moments
  (O(C^2) memory), so the same colour is the same feature vector in every image;
  `PcaBases`: one PcaBasis per layer;
- `project` and `scale`: a map's coordinates on a fit's components, mapped to [0, 1].

Every fit is deterministic (fixed generators) and sign-fixed: each component's
largest-magnitude loading is positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from featvis.errors import ReductionError
from featvis.reduce.base import Reduced

PCA_PIXELS = 4096  # pixels of a map used to fit its components (a fixed subsample above this)
PCA_EXACT_CHANNELS = 512  # up to this C the components are exact (eigh); above, randomized
PCA_PERCENTILES = (1.0, 99.0)  # per-map scaling of each component to [0, 1]
PCA_SHARED_Z = 2.3263  # shared basis: [0, 1] spans mean +- z sigma (N(0,1)'s 1st/99th percentile)
_SEED = 0


def _pixels(feat: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """(C, H, W) -> (n, C) pixels: all of them, or a fixed subsample of max_pixels (seeded)."""
    c = feat.shape[0]
    flat = feat.reshape(c, -1)
    n = flat.shape[1]
    if n > max_pixels:
        generator = torch.Generator().manual_seed(_SEED)
        idx = torch.randperm(n, generator=generator)[:max_pixels].sort().values
        flat = flat[:, idx.to(flat.device)]
    return flat.t()


def _fix_signs(components: torch.Tensor) -> torch.Tensor:
    """Flip each row so that its largest-magnitude loading is positive (first on ties)."""
    if components.numel() == 0:
        return components
    idx = components.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(components.gather(1, idx))
    signs[signs == 0] = 1
    return components * signs


def _pad3(components: torch.Tensor, variances: torch.Tensor, c: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fewer than 3 components (C < 3): pad with zero loadings and zero variance."""
    k = components.shape[0]
    if k < 3:
        components = torch.cat([components, components.new_zeros(3 - k, c)])
        variances = torch.cat([variances, variances.new_zeros(3 - k)])
    return components, variances


def _top3_from_cov(cov: torch.Tensor, exact_channels: int = PCA_EXACT_CHANNELS
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 3 leading eigenvectors (rows, sign-fixed) and eigenvalues of a C x C covariance.

    Exact (eigh, O(C^3)) up to `exact_channels`; above, a seeded subspace iteration, O(C^2 q).
    """
    c = cov.shape[0]
    if c > exact_channels:
        q = min(10, c)
        generator = torch.Generator().manual_seed(_SEED)
        basis, _ = torch.linalg.qr(cov @ torch.randn(c, q, generator=generator, dtype=cov.dtype).to(cov.device))
        for _ in range(8):
            basis, _ = torch.linalg.qr(cov @ basis)
        values, small = torch.linalg.eigh(basis.t() @ cov @ basis)
        vectors = basis @ small
    else:
        values, vectors = torch.linalg.eigh(cov)  # ascending
    k = min(3, c)
    components = vectors[:, -k:].flip(1).t()
    variances = values[-k:].flip(0).clamp_min(0)
    return _pad3(_fix_signs(components), variances, c)


def _top3_randomized(xc: torch.Tensor, iterations: int = 6, oversample: int = 7) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 3 leading right singular vectors of centred pixels (n, C), by subspace iteration.

    Halko et al.'s randomized range finder with a fixed generator, so the result is
    deterministic; O(n C q) per iteration instead of the O(n C^2) of an exact fit.
    """
    n, c = xc.shape
    q = min(3 + oversample, c, n)
    generator = torch.Generator().manual_seed(_SEED)
    basis = torch.randn(c, q, generator=generator, dtype=xc.dtype).to(xc.device)
    y, _ = torch.linalg.qr(xc @ basis)
    for _ in range(iterations):
        z, _ = torch.linalg.qr(xc.t() @ y)
        y, _ = torch.linalg.qr(xc @ z)
    _, s, vh = torch.linalg.svd(y.t() @ xc, full_matrices=False)
    k = min(3, vh.shape[0])
    return _pad3(_fix_signs(vh[:k]), (s[:k] ** 2) / max(n, 1), c)


def project(feat: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (3, H, W): each pixel's coordinates on the components, mean removed."""
    components = components.to(feat)
    offset = components @ mean.to(feat)
    return torch.einsum("kc,chw->khw", components, feat) - offset[:, None, None]


def scale(projected: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Map [lo, hi] of each component to [0, 1], clipped; a component with hi <= lo -> 0.5."""
    lo, hi = lo.to(projected)[:, None, None], hi.to(projected)[:, None, None]
    span = hi - lo
    flat = span <= 0
    out = ((projected - lo) / torch.where(flat, torch.ones_like(span), span)).clamp(0, 1)
    return torch.where(flat, torch.full_like(out, 0.5), out)


# A component is float rounding, drawn at 0.5 rather than stretched into colours, when its
# variance is below FLAT_RELATIVE x the first component's (float32 products of centred pixels
# leave ~1e-7 of it) plus FLAT_OFFSET x the squared norm of the mean (centring rounding).
FLAT_RELATIVE = 1e-5
FLAT_OFFSET = 1e-12


def _flatten_noise(lo: torch.Tensor, hi: torch.Tensor, variances: torch.Tensor,
                   mean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """lo = hi = 0 (drawn at 0.5) for the components that hold only float rounding."""
    floor = FLAT_RELATIVE * float(variances[0]) + FLAT_OFFSET * float(mean.double().pow(2).sum())
    noise = variances <= floor
    zero = torch.zeros_like(lo)
    return torch.where(noise, zero, lo), torch.where(noise, zero, hi)


@dataclass
class PcaFit:
    mean: torch.Tensor  # (C,) float64
    components: torch.Tensor  # (3, C) float64, rows orthonormal (zero rows when C < 3), signs fixed
    variances: torch.Tensor  # (3,) float64: the variance of the data along each component
    lo: torch.Tensor  # (3,) float64: the value of each component drawn as 0
    hi: torch.Tensor  # (3,) float64: the value drawn as 1
    explained: float  # fraction of the total variance the 3 components hold


class PcaBasis:
    """One PCA basis for one layer, fitted over many maps, so colours mean the same in all.

    Two passes over the images (`reduction.shared_basis=true`):

        basis = PcaBasis()
        # pass 1, in the hook of the layer, for every image:   basis.update(feat)
        basis.fit()
        # pass 2, in the hook of the layer, for every image:   pca_rgb(feat, basis=basis)

    `update` keeps only streaming moments (pixel count, mean (C,), scatter C x C, all
    float64), merged with Chan et al.'s parallel formula, so memory is O(C^2) whatever
    the number of images, and the fit equals the PCA of all (subsampled) pixels at once.
    Each map contributes at most `max_pixels` pixels (a fixed, seeded subsample), so a
    large map does not outweigh the others by more than that.

    Scaling to [0, 1] (no extra pass): component k is drawn with 0 at mean - z sigma_k and
    1 at mean + z sigma_k, sigma_k^2 being the variance along it over all fitted pixels and
    z = 2.326 (the 1st and 99th percentiles, were the coordinates Gaussian). The same numbers
    apply to every image, so the same colour is the same feature vector everywhere.
    """

    def __init__(self, max_pixels: int = PCA_PIXELS, z: float = PCA_SHARED_Z,
                 exact_channels: int = PCA_EXACT_CHANNELS) -> None:
        self.max_pixels = max_pixels
        self.z = z
        self.exact_channels = exact_channels  # above: fit() uses a seeded subspace iteration
        self.count = 0
        self._mean: Optional[torch.Tensor] = None  # (C,) float64, CPU
        self._scatter: Optional[torch.Tensor] = None  # (C, C) float64, CPU: sum of centred outer products
        self.fitted: Optional[PcaFit] = None

    @property
    def channels(self) -> Optional[int]:
        return None if self._mean is None else self._mean.shape[0]

    def update(self, feat: torch.Tensor) -> None:
        """Add the pixels of one (C, H, W) map; O(C^2) memory, keeps no reference to feat."""
        x = _pixels(feat.detach().float(), self.max_pixels)
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ReductionError(f"pca_rgb shared basis: a map with {x.shape[1]} channels was added to a "
                                 f"basis of {self._mean.shape[0]} channels; keep one basis per layer")
        n = x.shape[0]
        if n == 0:
            return
        mean = x.double().mean(dim=0)
        xc = x - mean.float()
        scatter = (xc.t() @ xc).double().cpu()  # float32 product of centred pixels: fast, and exact enough
        self._merge(n, mean.cpu(), scatter)

    def _merge(self, n: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Take in the moments of n more pixels (Chan et al.'s parallel formula)."""
        if self._mean is not None and mean.shape[0] != self._mean.shape[0]:
            raise ReductionError(f"pca_rgb shared basis: moments of {mean.shape[0]} channels were added to a "
                                 f"basis of {self._mean.shape[0]} channels; keep one basis per layer")
        if self._mean is None:
            self.count, self._mean, self._scatter = n, mean, scatter
        else:
            total = self.count + n
            delta = mean - self._mean
            self._scatter = self._scatter + scatter + torch.outer(delta, delta) * (self.count * n / total)
            self._mean = self._mean + delta * (n / total)
            self.count = total
        self.fitted = None  # a refit is needed

    def state(self) -> Dict[str, np.ndarray]:
        """The moments taken in so far, as plain arrays (for another process to `merge`)."""
        if self._mean is None or self._scatter is None:
            return {"count": np.array(0, np.int64)}
        return {"count": np.array(self.count, np.int64), "mean": self._mean.numpy(),
                "scatter": self._scatter.numpy()}

    def merge(self, state: Mapping[str, np.ndarray]) -> None:
        """Take in another basis's `state` (the pixels of other images): the fit is the PCA of both."""
        n = int(state["count"])
        if n > 0:
            self._merge(n, torch.from_numpy(np.asarray(state["mean"], np.float64)),
                        torch.from_numpy(np.asarray(state["scatter"], np.float64)))

    def fit(self) -> PcaFit:
        """The components of everything added so far (also kept as `self.fitted`)."""
        if self._mean is None or self._scatter is None:
            raise ReductionError("pca_rgb shared basis: fit() before any update(); run the first pass "
                                 "(basis.update in the hook) over the images first")
        cov = self._scatter / max(self.count, 1)
        components, variances = _top3_from_cov(cov, self.exact_channels)
        sigma = variances.sqrt()
        total = float(torch.trace(cov))
        explained = float(variances.sum()) / total if total > 0 else 0.0
        lo, hi = _flatten_noise(-self.z * sigma, self.z * sigma, variances, self._mean)
        self.fitted = PcaFit(self._mean.clone(), components, variances, lo, hi, explained)
        return self.fitted


class PcaBases(dict):
    """{layer sub-name: PcaBasis}, created on first use; one basis per drawn layer.

    Pass 1: `bases.update(feat, layer)` per map; then `bases.fit()`; pass 2:
    `featvis.reduce.pca.pca_rgb(feat, basis=bases, layer=name)` looks the layer's basis up.
    """

    def __init__(self, max_pixels: int = PCA_PIXELS, z: float = PCA_SHARED_Z,
                 exact_channels: int = PCA_EXACT_CHANNELS) -> None:
        super().__init__()
        self.options = dict(max_pixels=max_pixels, z=z, exact_channels=exact_channels)

    def update(self, feat: torch.Tensor, layer: str) -> Reduced:  # type: ignore[override]
        """Add one (C, H, W) map of `layer` (the recorder's sub-name) to that layer's basis.

        Returns an empty Reduced (maps (0, H, W)), so that `bases.update` can serve as the
        recorder's reduce_fn in the first pass (see featvis.reduce.pca.PcaRgb.observe).
        """
        if layer not in self:
            self[layer] = PcaBasis(**self.options)
        self[layer].update(feat)
        return Reduced(torch.zeros(0, *feat.shape[1:]))

    def fit(self) -> Dict[str, PcaFit]:
        """Fit every layer's basis (between the two passes)."""
        return {layer: basis.fit() for layer, basis in self.items()}

    def state(self) -> Dict[str, Dict[str, np.ndarray]]:
        """Every layer's moments (PcaBasis.state)."""
        return {layer: basis.state() for layer, basis in self.items()}

    def merge(self, state: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Take in another PcaBases's `state`, layer by layer."""
        for layer, moments in state.items():
            if layer not in self:
                self[layer] = PcaBasis(**self.options)
            self[layer].merge(moments)


def fit_one_map(feat: torch.Tensor, max_pixels: int, exact_channels: int) -> PcaFit:
    """The PCA of one map's (subsampled) pixels, scaled by its own 1st/99th percentiles."""
    c = feat.shape[0]
    x = _pixels(feat, max_pixels)
    mean = x.mean(dim=0)
    xc = x - mean
    if c <= exact_channels:
        components, variances = _top3_from_cov((xc.t() @ xc).double() / max(x.shape[0], 1), exact_channels)
    else:
        components, variances = _top3_randomized(xc)
    components, variances = components.double().cpu(), variances.double().cpu()
    projected = xc.double().cpu() @ components.t()  # (n, 3): the fitted pixels' coordinates
    q = torch.tensor(PCA_PERCENTILES, dtype=torch.float64) / 100
    lo, hi = torch.quantile(projected, q, dim=0)
    total = float(xc.double().pow(2).sum()) / max(x.shape[0], 1)
    explained = float(variances.sum()) / total if total > 0 else 0.0
    lo, hi = _flatten_noise(lo, hi, variances, mean)
    return PcaFit(mean.double().cpu(), components, variances, lo, hi, explained)
