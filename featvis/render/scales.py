"""Colour scales: which value range a map is coloured over, and with which colours.

`normalize.mode` (per_map, shared, fixed, percentile; see `scale_for`) chooses the range,
so that colours can mean the same value across layers, images or checkpoints. Signed
ranges get a blue-white-red diverging map, symmetric around 0. A constant map
(`is_constant`: equal up to float rounding, or no finite value) is never coloured.
`describe` words a scale for captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from featvis.record.slide import CONSTANT_RTOL
from featvis.render.colormaps import DIVERGING, JET

NORMALIZE_MODES = ("per_map", "shared", "fixed", "percentile")

COLORMAPS = ("auto", JET, DIVERGING)



def is_constant(values: np.ndarray) -> bool:
    """True for a map with nothing to show: all equal up to float rounding, or no finite value.

    Min-max normalisation would stretch rounding noise (1e-7 of a global-pooling branch's
    value) to the full colour range and draw it as if it were data.
    """
    return range_is_constant(finite_min_max(values))


def range_is_constant(found: Optional[Tuple[float, float]]) -> bool:
    """`is_constant` of a map whose finite (min, max) is `found` (None: no finite value)."""
    if found is None:
        return True
    lo, hi = found
    return hi - lo <= CONSTANT_RTOL * max(abs(lo), abs(hi))


def finite_min_max(values: np.ndarray) -> Optional[Tuple[float, float]]:
    """The min and max of the finite values; None when there is none."""
    return finite_range(values)[0]


def finite_range(values: np.ndarray) -> Tuple[Optional[Tuple[float, float]], bool]:
    """(`finite_min_max(values)`, whether every value is finite).

    Two passes over the map when all of it is finite (min and max are finite exactly then:
    NaN propagates, +-Inf would be the max or min); the masked copy only when it is not.
    """
    values = np.asarray(values)
    if values.size == 0:
        return None, True
    lo, hi = values.min(), values.max()
    if math.isfinite(lo) and math.isfinite(hi):
        return (float(lo), float(hi)), True
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, False
    return (float(finite.min()), float(finite.max())), False


@dataclass(frozen=True)
class Scale:
    """The value range a map is coloured over, and with which colours.

    lo, hi: the values drawn with the bottom and top colour (values outside are clipped);
        for the diverging map they are symmetric, -m and +m, so 0 is the neutral middle.
    signed: the range the values gave (before symmetrising) straddles 0: lo < 0 < hi.
    colormap: `jet` or `diverging` (never `auto`: `scale_for` resolves it).
    source: where the range came from, for captions: `per map`, `shared over run`, ...
    """
    lo: float
    hi: float
    signed: bool
    colormap: str
    source: str = "per map"


def make_scale(lo: float, hi: float, colormap: str = "auto", source: str = "per map") -> Scale:
    """A Scale for the range [lo, hi]: resolves `auto` and symmetrises diverging ranges.

    auto: diverging when lo < 0 < hi, else JET. diverging (chosen or resolved): the range
    becomes [-m, m] with m = max(|lo|, |hi|), so 0 is always the neutral middle colour
    (an all-positive map under an explicit `diverging` uses only the red half).
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}: use one of {list(COLORMAPS)}")
    lo, hi = float(lo), float(hi)
    signed = lo < 0.0 < hi
    name = (DIVERGING if signed else JET) if colormap == "auto" else colormap
    if name == DIVERGING:
        m = max(abs(lo), abs(hi))
        lo, hi = -m, m
    return Scale(lo, hi, signed, name, source)


def scale_for(values: np.ndarray, mode: str = "per_map",
              range: Sequence[float] = (0.0, 1.0),  # noqa: A002 - the config key's name
              percentiles: Sequence[float] = (1.0, 99.0),
              shared: Optional[Sequence[float]] = None,
              colormap: str = "auto") -> Scale:
    """The Scale of one map under `normalize.mode`.

    per_map:    finite min and max of `values` (MMEngine's min-max).
    percentile: np.percentile of the finite values at `percentiles` (p_lo, p_hi), so a few
                outliers do not squash the rest; falls back to min/max when the two
                percentiles coincide (a map that is mostly one value).
    fixed:      `range` as given (validate() checks lo < hi).
    shared:     `shared`, the (lo, hi) the caller accumulated over the run with SharedRange.
    `values` is only read for per_map and percentile. A map with no finite value gets the
    range (0, 0); it is constant, so nothing is coloured with it.
    """
    if mode == "per_map":
        lo, hi = finite_min_max(values) or (0.0, 0.0)
        source = "per map"
    elif mode == "percentile":
        p_lo, p_hi = percentiles
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            lo, hi = 0.0, 0.0
        else:
            lo, hi = (float(v) for v in np.percentile(finite, [p_lo, p_hi]))
            if not hi > lo:
                lo, hi = float(finite.min()), float(finite.max())
        source = f"p{p_lo:g}-p{p_hi:g} per map"
    elif mode == "fixed":
        lo, hi = range
        source = "fixed"
    elif mode == "shared":
        if shared is None:
            raise ValueError("normalize.mode=shared needs the run's range: accumulate it with "
                             "SharedRange over every map of the layer first, then pass shared=.range()")
        lo, hi = shared
        source = "shared over run"
    else:
        raise ValueError(f"unknown normalize mode {mode!r}: use one of {list(NORMALIZE_MODES)}")
    return make_scale(lo, hi, colormap, source)


@dataclass(frozen=True)
class ScaleRule:
    """`cfg.normalize` as a callable: values -> Scale. Pass it as `overlay_maps(scale=...)`.

    Each map (after alignment) gets `scale_for(values, mode, ...)`: for per_map and
    percentile a range of its own, for fixed and shared the same one. For mode=shared,
    `shared` must be the layer's SharedRange.range(), i.e. one rule per layer.
    """
    mode: str = "per_map"
    range: Tuple[float, float] = (0.0, 1.0)
    percentiles: Tuple[float, float] = (1.0, 99.0)
    colormap: str = "auto"
    shared: Optional[Tuple[float, float]] = None

    @classmethod
    def from_config(cls, normalize: Any, shared: Optional[Sequence[float]] = None) -> "ScaleRule":
        """From `cfg.normalize` (mode, range, percentiles, colormap; a DictConfig or any object)."""
        return cls(mode=str(normalize.mode),
                   range=(float(normalize.range[0]), float(normalize.range[1])),
                   percentiles=(float(normalize.percentiles[0]), float(normalize.percentiles[1])),
                   colormap=str(normalize.colormap),
                   shared=None if shared is None else (float(shared[0]), float(shared[1])))

    def __call__(self, values: np.ndarray) -> Scale:
        return scale_for(values, self.mode, self.range, self.percentiles, self.shared, self.colormap)


class SharedRange:
    """One value range for a layer over a whole run (normalize.mode=shared).

    Feed it every map of the layer, of every image (all K maps of a topk layer), with
    `update`; then `range()` gives the (lo, hi) to pass as `scale_for(shared=...)` or
    `ScaleRule(shared=...)`. Feed `crop_valid(map, meta)` so that padding is left out.

    percentiles=None (default): the finite min and max of everything seen, exact, O(1) memory.
    percentiles=(p_lo, p_hi): those percentiles of everything seen, estimated from a uniform
    random sample of at most `sample_size` values (each value gets a random key and the
    `sample_size` smallest keys are kept, so the sample is uniform over the whole stream,
    whatever the map sizes). While fewer values than `sample_size` were seen, the sample
    is everything and the percentiles are exact. Seeded: the same run gives the same range.
    """

    def __init__(self, percentiles: Optional[Sequence[float]] = None, sample_size: int = 1 << 16,
                 seed: int = 0) -> None:
        self.percentiles = None if percentiles is None else (float(percentiles[0]), float(percentiles[1]))
        self.sample_size = int(sample_size)
        self.count = 0  # finite values seen
        self._lo, self._hi = math.inf, -math.inf
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0, np.float64)
        self._sample = np.empty(0, np.float32)

    def update(self, values: Union[np.ndarray, torch.Tensor]) -> None:
        """Take in one map (any shape); NaN and Inf are ignored."""
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().float().numpy()
        flat = np.asarray(values, np.float32).ravel()
        finite = flat[np.isfinite(flat)]
        if finite.size == 0:
            return
        self.count += finite.size
        self._lo = min(self._lo, float(finite.min()))
        self._hi = max(self._hi, float(finite.max()))
        if self.percentiles is None:
            return
        keys = self._rng.random(finite.size)
        keys, finite = self._smallest(keys, finite)
        self._keys, self._sample = self._smallest(np.concatenate([self._keys, keys]),
                                                  np.concatenate([self._sample, finite]))

    def _smallest(self, keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if keys.size <= self.sample_size:
            return keys, values
        keep = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
        return keys[keep], values[keep]

    def state(self) -> Dict[str, np.ndarray]:
        """What was seen, as plain arrays (for another process to `merge`)."""
        return {"count": np.array(self.count, np.int64), "lo": np.array(self._lo), "hi": np.array(self._hi),
                "keys": self._keys, "sample": self._sample}

    def merge(self, state: Mapping[str, np.ndarray]) -> None:
        """Take in another SharedRange's `state` (the maps of other images): the min and max are exactly
        those of both; with percentiles, the sample is the smallest keys of both samples (uniform over both
        streams, though not the same values one stream would have kept)."""
        self.count += int(state["count"])
        self._lo = min(self._lo, float(state["lo"]))
        self._hi = max(self._hi, float(state["hi"]))
        if self.percentiles is not None:
            self._keys, self._sample = self._smallest(np.concatenate([self._keys, np.asarray(state["keys"])]),
                                                      np.concatenate([self._sample, np.asarray(state["sample"])]))

    def range(self) -> Optional[Tuple[float, float]]:
        """(lo, hi) of what was seen, or None when no finite value was."""
        if self.count == 0:
            return None
        if self.percentiles is not None:
            lo, hi = (float(v) for v in np.percentile(self._sample, self.percentiles))
            if hi > lo:
                return lo, hi
        return self._lo, self._hi


def describe(scale: Optional[Scale]) -> str:
    """A caption fragment: `range [-1.2, 3.4] (shared over run), diverging`.

    None (a constant map, not coloured) gives ''.
    """
    if scale is None:
        return ""
    return f"range [{format_number(scale.lo)}, {format_number(scale.hi)}] ({scale.source}), {scale.colormap}"


def format_number(value: float) -> str:
    return f"{value:.3g}"

