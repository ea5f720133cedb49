"""Reduced maps and label masks -> RGB pictures of the original image's size.

Everything here is RGB uint8 (H, W, 3), the order MMEngine's backends expect: the
MMSegmentation guide's script passed BGR and logged blue-tinted pictures.

Heat maps: by default (`scale=None`) exactly MMEngine's `draw_featmap`: min-max
normalised per map, JET colours, blended over the image with weight `alpha`. A `Scale`
replaces the per-map min-max by a range chosen once (`normalize.mode`: per_map, shared,
fixed, percentile; see `scale_for`), so that colours mean the same value across layers,
images or checkpoints, and picks the colours: JET, or a blue-white-red diverging map,
symmetric around 0, for signed ranges. Values outside the range are clipped to its end
colours. Two things never change with the scale:

- a constant map (`is_constant`: equal up to float rounding, or no finite value) is not
  coloured: the picture is the plain image (the pipeline says so in the caption);
- NaN and +-Inf are drawn as the map's finite minimum (the caption says so too).

`draw_scale_bar` paints the colour scale and its end values over the bottom rows of a
picture (the picture keeps its size); `describe` words a scale for captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from featvis.colormaps import DIVERGING, JET, lut

IGNORE_INDEX = 255

NORMALIZE_MODES = ("per_map", "shared", "fixed", "percentile")
COLORMAPS = ("auto", JET, DIVERGING)


# --------------------------------------------------------------------------- alignment

def valid_region(meta: Mapping, map_hw: Tuple[int, int]) -> Tuple[int, int]:
    """How many rows and columns of a feature map cover the image, not the padding.

    The model saw the image resized to `img_shape` and padded at the bottom and right
    to `batch_input_shape` (or `pad_shape`); a map of size `map_hw` spans that padded input.
    """
    img_h, img_w = meta.get("img_shape", map_hw)[:2]
    full_h, full_w = (meta.get("batch_input_shape") or meta.get("pad_shape") or (img_h, img_w))[:2]
    h = max(1, min(map_hw[0], round(map_hw[0] * img_h / full_h)))
    w = max(1, min(map_hw[1], round(map_hw[1] * img_w / full_w)))
    return h, w


def crop_valid(map2d: Union[torch.Tensor, np.ndarray], meta: Mapping) -> np.ndarray:
    """The part of a (H, W) map that covers the image (padding cropped), float32, not resized.

    What to feed `SharedRange.update`: padding values are not data.
    """
    h, w = valid_region(meta, tuple(map2d.shape))
    cropped = map2d[:h, :w]
    if isinstance(cropped, torch.Tensor):
        cropped = cropped.detach().cpu().float().numpy()
    return np.asarray(cropped, np.float32)


def align(map2d: Union[torch.Tensor, np.ndarray], meta: Mapping, out_hw: Tuple[int, int]) -> np.ndarray:
    """Crop the padding off a (H, W) map and resize it bilinearly to `out_hw`."""
    return cv2.resize(crop_valid(map2d, meta), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- values

CONSTANT_RTOL = 1e-5  # a map whose range is below this fraction of its magnitude is constant


def is_constant(values: np.ndarray) -> bool:
    """True for a map with nothing to show: all equal up to float rounding, or no finite value.

    Min-max normalisation would stretch rounding noise (1e-7 of a global-pooling branch's
    value) to the full colour range and draw it as if it were data.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return True
    lo, hi = float(finite.min()), float(finite.max())
    return hi - lo <= CONSTANT_RTOL * max(abs(lo), abs(hi))


def _finite_min_max(values: np.ndarray) -> Optional[Tuple[float, float]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


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
        lo, hi = _finite_min_max(values) or (0.0, 0.0)
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

    def range(self) -> Optional[Tuple[float, float]]:
        """(lo, hi) of what was seen, or None when no finite value was."""
        if self.count == 0:
            return None
        if self.percentiles is not None:
            lo, hi = (float(v) for v in np.percentile(self._sample, self.percentiles))
            if hi > lo:
                return lo, hi
        return self._lo, self._hi


# --------------------------------------------------------------------------- colours

def normalize(values: np.ndarray, scale: Optional[Scale] = None) -> np.ndarray:
    """Values -> uint8 colour indices, 0 at `scale.lo`, 255 at `scale.hi`, clipped outside.

    scale=None: min-max per map (MMEngine's behaviour), and a constant map becomes 0.
    NaN and Inf are drawn as the map's finite minimum; the pipeline reports them in the caption.
    A degenerate scale (hi <= lo) gives 0 everywhere.
    """
    if scale is None:
        if is_constant(values):
            return np.zeros(values.shape, np.uint8)
        lo, hi = _finite_min_max(values)
        fill = lo
    else:
        lo, hi = scale.lo, scale.hi
        fill = (_finite_min_max(values) or (lo, hi))[0]
    cleaned = np.nan_to_num(values, nan=fill, posinf=fill, neginf=fill)
    factor = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((cleaned - lo) * factor).clip(0, 255).astype(np.uint8)


def colorize(values: np.ndarray, scale: Scale) -> np.ndarray:
    """A (H, W) map -> (H, W, 3) RGB uint8 in the scale's colours (no blending)."""
    return lut(scale.colormap)[normalize(values, scale)]


def heatmap(values: np.ndarray, image: Optional[np.ndarray], alpha: float,
            scale: Optional[Scale] = None) -> np.ndarray:
    """Colour a (H, W) map and blend it over an RGB image of the same size.

    scale=None: today's per-map min-max JET. A constant map is not coloured: the picture
    is the plain image (mid grey without one).
    """
    if is_constant(values):
        return image.copy() if image is not None else np.full(values.shape + (3,), 128, np.uint8)
    heat = colorize(values, scale if scale is not None else scale_for(values, "per_map", colormap=JET))
    if image is None:
        return heat
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


ScaleArg = Union[None, Scale, Callable[[np.ndarray], Scale]]


def overlay_maps(maps: torch.Tensor, image: np.ndarray, meta: Mapping, alpha: float,
                 arrangement: Optional[Sequence[int]] = None,
                 labels: Optional[Sequence[str]] = None,
                 scale: ScaleArg = None, scale_bar: bool = False,
                 return_scales: bool = False):
    """(K, h, w) maps -> one picture: the overlay for K == 1, a rows x cols grid otherwise.

    Each map is aligned to the image (padding cropped, resized), then coloured with:
    scale=None: per-map min-max JET, exactly MMEngine's draw_featmap (and featvis before
        normalize.*); a Scale: that one for every map (fixed, shared); a callable
        values -> Scale, such as ScaleRule: called on each aligned map (per_map, percentile).
    scale_bar: paint each coloured tile's colour scale and range over its bottom rows
        (`draw_scale_bar`); constant tiles get none.
    return_scales: return (picture, scales), scales[i] the Scale map i was coloured with,
        None for a constant map (not coloured), for captions (`describe`).
    """
    out_hw = image.shape[:2]
    tiles, scales = [], []
    for m in maps:
        values = align(m, meta, out_hw)
        if is_constant(values):
            tile, used = image.copy(), None
        else:
            if scale is None:
                used = scale_for(values, "per_map", colormap=JET)
            elif isinstance(scale, Scale):
                used = scale
            else:
                used = scale(values)
            tile = cv2.addWeighted(image, 1.0 - alpha, colorize(values, used), alpha, 0.0)
            if scale_bar:
                draw_scale_bar(tile, used)
        tiles.append(tile)
        scales.append(used)
    if len(tiles) == 1:
        picture = tiles[0]
    else:
        if labels:
            for tile, text in zip(tiles, labels):
                _label(tile, text)
        rows, cols = arrangement or (1, len(tiles))
        picture = grid(tiles, rows, cols)
    return (picture, scales) if return_scales else picture


def overlay_rgb(maps3: torch.Tensor, image: np.ndarray, meta: Mapping, alpha: float) -> np.ndarray:
    """(3, h, w) maps in [0, 1] (PCA colours) -> RGB blended over the image.

    Channel 0 is red, 1 green, 2 blue. Each channel is aligned like a heat map (padding
    cropped, resized bilinearly to the image); values outside [0, 1] are clipped, NaN is 0.
    """
    if maps3.shape[0] != 3:
        raise ValueError(f"overlay_rgb needs 3 maps (R, G, B), got {tuple(maps3.shape)}")
    out_hw = image.shape[:2]
    rgb = np.stack([align(m, meta, out_hw) for m in maps3], axis=-1)
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0)
    colours = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)


def describe(scale: Optional[Scale]) -> str:
    """A caption fragment: `range [-1.2, 3.4] (shared over run), diverging`.

    None (a constant map, not coloured) gives ''.
    """
    if scale is None:
        return ""
    return f"range [{_number(scale.lo)}, {_number(scale.hi)}] ({scale.source}), {scale.colormap}"


def _number(value: float) -> str:
    return f"{value:.3g}"


# --------------------------------------------------------------------------- scale bar

SCALE_BAR_FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE_BAR_MIN_TEXT_HW = (48, 64)  # pictures smaller than this get the strip without the numbers


def _bar_layout(height: int) -> Tuple[int, float, int, int]:
    """(strip rows, font scale, text thickness, rows of the text band above the strip)."""
    bar = int(min(12, max(8, height // 32)))
    bar = min(bar, max(1, height // 4))
    font = float(min(1.0, max(0.4, height / 400)))
    thickness = 1 if font < 0.7 else 2
    (_, text_h), baseline = cv2.getTextSize("-0.123", SCALE_BAR_FONT, font, thickness + 2)
    return bar, font, thickness, text_h + baseline + 3


def scale_bar_rows(height: int, width: int) -> int:
    """How many bottom rows `draw_scale_bar` may change on a picture of this size."""
    bar, _, _, text_rows = _bar_layout(height)
    if height < SCALE_BAR_MIN_TEXT_HW[0] or width < SCALE_BAR_MIN_TEXT_HW[1]:
        return bar
    return min(height, bar + text_rows)


def draw_scale_bar(picture: np.ndarray, scale: Scale) -> np.ndarray:
    """Paint the colour scale over the bottom rows of an RGB picture, in place; returns it.

    The picture keeps its size: a full-width strip of 8-12 rows (fewer on pictures under
    32 rows) shows the colormap from scale.lo (left) to scale.hi (right), and just above it
    the two values (and 0 in the middle of a diverging scale) in white with a dark outline.
    Only the bottom `scale_bar_rows(h, w)` rows change; pictures under 48x64 get no numbers.
    """
    h, w = picture.shape[:2]
    bar, font, thickness, _ = _bar_layout(h)
    index = np.rint(np.linspace(0, 255, w)).astype(np.intp) if w > 1 else np.array([255])
    picture[h - bar:, :] = lut(scale.colormap)[index][None, :, :]
    if h < SCALE_BAR_MIN_TEXT_HW[0] or w < SCALE_BAR_MIN_TEXT_HW[1]:
        return picture
    y = h - bar - 3  # text baseline, just above the strip
    texts = [(_number(scale.lo), "left"), (_number(scale.hi), "right")]
    if scale.colormap == DIVERGING:
        texts.append(("0", "centre"))
    taken: List[Tuple[int, int]] = []
    for text, where in texts:
        (tw, _), _ = cv2.getTextSize(text, SCALE_BAR_FONT, font, thickness)
        x = {"left": 2, "right": w - tw - 2, "centre": (w - tw) // 2}[where]
        if any(x < end + 4 and start < x + tw + 4 for start, end in taken):
            continue  # would overlap lo or hi on a narrow picture
        taken.append((x, x + tw))
        cv2.putText(picture, text, (x, y), SCALE_BAR_FONT, font, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(picture, text, (x, y), SCALE_BAR_FONT, font, (255, 255, 255), thickness, cv2.LINE_AA)
    return picture


# --------------------------------------------------------------------------- layout, labels

def grid(tiles: Sequence[np.ndarray], rows: int, cols: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized RGB pictures row by row, white between them, without matplotlib."""
    h, w = tiles[0].shape[:2]
    canvas = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return canvas


def _label(tile: np.ndarray, text: str) -> None:
    scale = max(0.35, tile.shape[0] / 500)
    thickness = max(1, int(scale * 2))
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(tile, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)


def colorize_labels(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Label map (H, W) -> RGB with the dataset palette; ignored or unknown labels are black."""
    table = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8)[:IGNORE_INDEX]
    table[: len(colours)] = colours
    return table[labels.astype(np.uint8)]


def overlay_labels(labels: np.ndarray, image: np.ndarray, palette: Sequence[Sequence[int]],
                   alpha: float) -> np.ndarray:
    """Blend the palette colours of a label map over the image; ignored pixels stay as they are."""
    coloured = cv2.addWeighted(image, 1.0 - alpha, colorize_labels(labels, palette), alpha, 0.0)
    ignored = labels == IGNORE_INDEX
    coloured[ignored] = image[ignored]
    return coloured
