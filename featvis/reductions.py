"""Channel reductions: one (C, H, W) feature map -> the (K, H, W) maps that get drawn.

Each reduction is a small function registered by name in REDUCTIONS:

- select_max:   the one channel with the largest spatial sum (MMEngine's select_max);
- squeeze_mean: the mean over channels (MMEngine's squeeze_mean);
- topk:         the `topk` channels with the largest spatial sums, drawn as a grid;
- channel_max:  per pixel, the largest value over channels (K=1);
- l2_norm:      per pixel, the L2 norm of the channel vector (K=1);
- std:          per pixel, the standard deviation over channels (population, K=1);
- pca_rgb:      per pixel, the coordinates on the first three principal components of
                the channel vectors, scaled to [0, 1]: K=3 maps that are the R, G, B
                channels of one colour picture (see `pca_rgb`, `PcaBasis`);
- class_map:    the map weighted by the segmentation head's classifier for one class,
                i.e. that class's logit before upsampling (signed; see `class_map`);
- gradcam:      registered so that configs validate, but not a per-map reduction: it
                needs gradients and runs the model itself (featvis.gradcam.gradcam_maps).

They run inside the forward hook, so what the recorder keeps is K maps, never C: each
function is cheap and keeps no reference to `feat`.

Calling convention: `REDUCTIONS[name](feat, **options)`, `feat` (C, H, W) float32 on the
model's device; every reduction ignores the options it does not know, so one
`functools.partial(reduce, name, **options)` serves them all.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from featvis.errors import ReductionError


@dataclass
class Reduced:
    maps: torch.Tensor  # (K, H, W) float32 on the CPU
    channels: Optional[List[int]] = None  # the channels kept, for captions (None: a mix of all)
    note: Optional[str] = None  # what a caption should add, e.g. the variance PCA explains
    # activation statistics of the full (C, H, W) map before reduction (set by the recorder):
    # {"mean", "std", "zero_fraction", "max"}; None where not computed (Grad-CAM)
    stats: Optional[Dict[str, float]] = None


Reduction = Callable[..., Reduced]
REDUCTIONS: Dict[str, Reduction] = {}

# Reductions that need `reduction.target_class` (resolve it with `resolve_class`).
CLASS_REDUCTIONS = frozenset({"class_map", "gradcam"})
# Reductions that cannot run in a forward hook: the pipeline calls featvis.gradcam instead.
GRADIENT_REDUCTIONS = frozenset({"gradcam"})


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


@register("channel_max")
def channel_max(feat: torch.Tensor, **_: object) -> Reduced:
    """Per pixel, the largest value over the channels: (1, H, W)."""
    return Reduced(feat.amax(dim=0, keepdim=True))


@register("l2_norm")
def l2_norm(feat: torch.Tensor, **_: object) -> Reduced:
    """Per pixel, the Euclidean norm of its C-vector: (1, H, W), >= 0."""
    return Reduced(torch.linalg.vector_norm(feat, ord=2, dim=0, keepdim=True))


@register("std")
def std(feat: torch.Tensor, **_: object) -> Reduced:
    """Per pixel, the population standard deviation (divide by C) over channels: (1, H, W)."""
    return Reduced(feat.std(dim=0, correction=0, keepdim=True))


# --------------------------------------------------------------------------- pca_rgb

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


def _project(feat: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (3, H, W): each pixel's coordinates on the components, mean removed."""
    components = components.to(feat)
    offset = components @ mean.to(feat)
    return torch.einsum("kc,chw->khw", components, feat) - offset[:, None, None]


def _scale(projected: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
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
        mean = mean.cpu()
        if self._mean is None:
            self.count, self._mean, self._scatter = n, mean, scatter
        else:
            total = self.count + n
            delta = mean - self._mean
            self._scatter = self._scatter + scatter + torch.outer(delta, delta) * (self.count * n / total)
            self._mean = self._mean + delta * (n / total)
            self.count = total
        self.fitted = None  # a refit is needed

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
    `pca_rgb(feat, basis=bases, layer=name)` looks the layer's basis up.
    """

    def __init__(self, max_pixels: int = PCA_PIXELS, z: float = PCA_SHARED_Z,
                 exact_channels: int = PCA_EXACT_CHANNELS) -> None:
        super().__init__()
        self.options = dict(max_pixels=max_pixels, z=z, exact_channels=exact_channels)

    def update(self, feat: torch.Tensor, layer: str, **_: object) -> Reduced:  # type: ignore[override]
        """Add one (C, H, W) map of `layer` (the recorder's sub-name) to that layer's basis.

        Returns an empty Reduced (maps (0, H, W)), so that `bases.update` can serve as the
        recorder's reduce_fn in the first pass.
        """
        if layer not in self:
            self[layer] = PcaBasis(**self.options)
        self[layer].update(feat)
        return Reduced(torch.zeros(0, *feat.shape[1:]))

    def fit(self) -> Dict[str, PcaFit]:
        """Fit every layer's basis (between the two passes)."""
        return {layer: basis.fit() for layer, basis in self.items()}


def _fit_one_map(feat: torch.Tensor, max_pixels: int, exact_channels: int) -> PcaFit:
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


@register("pca_rgb")
def pca_rgb(feat: torch.Tensor, basis: Union[None, PcaBasis, PcaFit, Mapping[str, PcaBasis]] = None,
            layer: Optional[str] = None, max_pixels: int = PCA_PIXELS,
            exact_channels: int = PCA_EXACT_CHANNELS, **_: object) -> Reduced:
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
        fit = _fit_one_map(feat, max_pixels, exact_channels)
    maps = _scale(_project(feat, fit.mean, fit.components), fit.lo, fit.hi)
    return Reduced(maps, None, f"PC1-3 {100 * fit.explained:.0f}% of variance")


# --------------------------------------------------------------------------- class_map

@register("class_map")
def class_map(feat: torch.Tensor, class_weight: Optional[torch.Tensor] = None, class_bias: float = 0.0,
              class_name: Optional[str] = None, conv_seg_input: Optional[str] = None,
              **_: object) -> Reduced:
    """The class's logit at every pixel: sum_c W[k, c] * feat[c] + b[k] -> (1, H, W), signed.

    W[k], b[k] are row k of the segmentation head's 1x1 classifier (decode_head.conv_seg),
    as `class_map_options` returns them; positive = evidence for the class. This is a
    gradient-free class activation map; at the layer that feeds conv_seg it equals
    mmseg's class-k logit before upsampling (dropout is off at inference).
    """
    if class_weight is None:
        raise ReductionError("reduction=class_map needs a class: set reduction.target_class=<name or index>")
    weight = class_weight.reshape(-1).to(feat)
    if feat.shape[0] != weight.shape[0]:
        hint = f", such as {conv_seg_input}" if conv_seg_input else ""
        raise ReductionError(f"class_map applies to layers whose output feeds decode_head.conv_seg "
                             f"(C={weight.shape[0]}){hint}; this layer has C={feat.shape[0]}: "
                             f"fix layers.names")
    cam = torch.einsum("c,chw->hw", weight, feat) + float(class_bias)
    note = f"class {class_name}" if class_name else None
    return Reduced(cam[None], None, note)


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


def class_map_options(model: nn.Module, target_class: Union[None, str, int],
                      classes: Sequence[str]) -> Dict[str, object]:
    """The options of class_map for `target_class` (a class name or index, e.g. from the config).

    Returns {'class_weight': (C,) float32 CPU tensor, 'class_bias': float, 'class_name': str,
    'class_index': int, 'conv_seg_input': layer name or None}: pass them all to the reduction
    (`partial(reduce, 'class_map', **options)`). Raises ReductionError (one line, listing
    the classes) for an unknown class.
    """
    index = resolve_class(target_class, classes)
    layer = conv_seg(model)
    if index >= layer.out_channels:
        raise ReductionError(f"class {index} ({classes[index]}) is beyond the {layer.out_channels} outputs "
                             "of decode_head.conv_seg")
    weight = layer.weight.detach()[index, :, 0, 0].float().cpu().clone()
    bias = float(layer.bias.detach()[index]) if layer.bias is not None else 0.0
    return {"class_weight": weight, "class_bias": bias, "class_name": str(classes[index]),
            "class_index": index, "conv_seg_input": conv_seg_input(model)}


# --------------------------------------------------------------------------- gradcam

@register("gradcam")
def gradcam(feat: torch.Tensor, **_: object) -> Reduced:
    """Placeholder: Grad-CAM needs the gradient of the prediction, which a forward hook lacks."""
    raise ReductionError("reduction=gradcam cannot run in a forward hook: it runs the model itself "
                         "(featvis.gradcam.gradcam_maps)")


def reduce(name: str, feat: torch.Tensor, **options: object) -> Reduced:
    """Apply reduction `name` to a (C, H, W) map; the result is float32, detached, on the CPU.

    The result is a copy, never a view: a view would keep the whole C x H x W storage alive.
    """
    out = REDUCTIONS[name](feat.detach().float(), **options)
    out.maps = out.maps.detach().float().cpu().clone()
    return out
