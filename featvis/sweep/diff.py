"""Difference sheets: where each checkpoint's reduced maps differ from the baseline's, one picture per image.

For every group of featvis.sweep.checkpoints, every layer and every compared job, the
per-pixel difference `job - baseline` of the layer's first reduced map (what is drawn;
the job's map is resized to the baseline's size when they differ), coloured on the
diverging blue-white-red scale symmetric around 0 (featvis.render.colormaps): white = no
change. The range [-m, m] is one per layer: m is the 99th percentile of |difference| of
that layer over every compared checkpoint and every image (larger differences get the
end colours), so the columns of a row, and the sheets of the images, compare at a glance.
`diff_<image stem>.png`: a row per layer (its range in its label), a column per compared
checkpoint (captioned above), a colour scale under each map.

Reductions that choose channels per job (select_max, topk) may pick other channels in
each checkpoint: their difference then mixes a change of channel with a change of values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from cachetools import LRUCache

from featvis.backends.encoding import png_bytes
from featvis.compare.sketch import open_sketch
from featvis.io import write_atomic
from featvis.render.colormaps import DIVERGING, NEUTRAL
from featvis.render.draw import draw_scale_bar
from featvis.render.heatmap import colorize
from featvis.render.scales import Scale, format_number, make_scale
from featvis.sweep.checkpoints import Comparison, file_stamps

TILE_H = 128  # height of each difference map
LABEL_W = 200  # the layer-name column
HEADER_H = 34  # the checkpoint captions above the columns
GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX
SOURCE = "shared over checkpoints"
RANGE_PERCENTILE = 99.0  # of |difference| over a layer's checkpoints and images: the end of its scale

MapKey = Tuple[str, str]  # (image stem, layer)
# the reduced maps of a sketch file version, kept between the summaries of one sweep (small: one map per layer)
_MAPS: "LRUCache[Tuple[Tuple[str, int, int], ...], Dict[MapKey, np.ndarray]]" = LRUCache(
    maxsize=128 * 2 ** 20, getsizeof=lambda maps: sum(m.nbytes for m in maps.values()) + 1)


@dataclass
class DiffSheet:
    """Where things are on one image's difference sheet, for summary.json and the index."""

    file: str  # in the summary folder
    rows: List[str]  # each row's layer (with its group's overrides when the sweep has several groups)
    cols: List[str]  # each column's checkpoint caption
    ranges: Dict[str, float]  # row -> m: the row is coloured over [-m, m] (clipped beyond)
    size: Tuple[int, int]  # the sheet's (h, w)

    def to_json(self) -> Dict[str, object]:
        return {"file": self.file, "rows": list(self.rows), "cols": list(self.cols), "ranges": dict(self.ranges),
                "size": list(self.size)}


def diff_file(stem: str) -> str:
    """The file name of an image's difference sheet in the summary folder."""
    return f"diff_{stem}.png"


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b - a in float32 at a's size (b resized bilinearly when its size differs); NaN and Inf as 0."""
    a32 = np.nan_to_num(np.asarray(a, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    b32 = np.nan_to_num(np.asarray(b, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if b32.shape != a32.shape:
        b32 = cv2.resize(b32, (a32.shape[1], a32.shape[0]), interpolation=cv2.INTER_LINEAR)
    return b32 - a32


def write_diff_sheets(comparison: Comparison, out: Path) -> Dict[str, DiffSheet]:
    """`<out>/diff_<stem>.png` for every image a group's baseline has maps of; image stem -> its sheet."""
    rows = _rows(comparison)
    if not rows:
        return {}
    stems: List[str] = []
    for group in comparison.groups:
        stems += [s for s in group.images if s not in stems]
    cols = comparison.columns()
    baselines = comparison.baselines()
    sheets: Dict[str, DiffSheet] = {}
    for stem in stems:
        picture, shown = _sheet(rows, cols, stem, baselines)
        if picture is None:
            continue
        file = diff_file(stem)
        write_atomic(out / file, png_bytes(picture))
        sheets[stem] = DiffSheet(file=file, rows=[r.label for r in shown], cols=cols,
                                 ranges={r.label: r.m for r in shown}, size=(picture.shape[0], picture.shape[1]))
    return sheets


@dataclass
class _Row:
    label: str
    layer: str
    m: float  # the layer's range: max |difference| over its checkpoints and images
    diffs: Dict[Tuple[str, str], np.ndarray]  # (stem, column caption) -> difference map


def _rows(comparison: Comparison) -> List[_Row]:
    rows: List[_Row] = []
    for group in comparison.groups:
        maps = {job_dir: _maps(path) for job_dir, path in group.sketches.items()}
        base = maps[group.baseline.dir]
        for layer in group.layers:
            diffs: Dict[Tuple[str, str], np.ndarray] = {}
            for stem in group.images:
                a = base.get((stem, layer))
                for job in group.jobs:
                    b = maps[job.dir].get((stem, layer))
                    if a is not None and b is not None:
                        diffs[(stem, group.labels[job.name])] = difference(a, b)
            if diffs:
                m = _range(list(diffs.values()))
                rows.append(_Row(label=comparison.row_label(group, layer), layer=layer, m=m, diffs=diffs))
    return rows


def _range(diffs: Sequence[np.ndarray]) -> float:
    """m for the scale [-m, m]: the RANGE_PERCENTILE of |difference| (a few outlying pixels do not wash
    out the rest; beyond m the colour stays at its end), or the largest when that percentile is 0."""
    values = np.abs(np.concatenate([d.ravel() for d in diffs]))
    m = float(np.percentile(values, RANGE_PERCENTILE))
    return m if m > 0 else float(values.max())


def _maps(paths: Sequence[Path]) -> Dict[MapKey, np.ndarray]:
    """Every reduced map of a job's sketch (its file, or its shards'), kept per version of the files."""
    key = file_stamps(paths)
    if key not in _MAPS:
        sketch = open_sketch(paths)
        found = {(s, layer): sketch.map(s, layer) for s in sketch.images for layer in sketch.layers}
        _MAPS[key] = {k: v for k, v in found.items() if v is not None}
    return _MAPS[key]


def _sheet(rows: Sequence[_Row], cols: Sequence[str], stem: str,
           baselines: str) -> Tuple[Optional[np.ndarray], List[_Row]]:
    shown = [r for r in rows if any(s == stem for s, _ in r.diffs)]
    if not shown:
        return None, []
    first = next(d for (s, _), d in shown[0].diffs.items() if s == stem)
    w = max(64, min(3 * TILE_H, round(TILE_H * first.shape[1] / max(1, first.shape[0]))))
    header = [_caption_tile(LABEL_W, HEADER_H, [f"image {stem}", f"checkpoint - {baselines}"])]
    header += [_caption_tile(w, HEADER_H, [col]) for col in cols]
    lines = [_hstack(header)]
    for row in shown:
        scale = (make_scale(-row.m, row.m, DIVERGING, source=SOURCE) if row.m > 0
                 else Scale(0.0, 0.0, False, DIVERGING, SOURCE))  # no change anywhere: 0, not -0
        cells = [_map_tile(row.diffs.get((stem, col)), scale, w) for col in cols]
        label = _caption_tile(LABEL_W, cells[0].shape[0], [row.label, f"scale +-{format_number(row.m)} (p99)"])
        lines.append(_hstack([label] + cells))
    return _vstack(lines), shown


def _map_tile(diff: Optional[np.ndarray], scale: Scale, w: int) -> np.ndarray:
    """A difference map at (TILE_H, w), its colour scale below; white with no map (the job lacks the layer)."""
    if diff is None:
        tile = np.full((TILE_H, w, 3), 255, np.uint8)
    else:
        big = cv2.resize(diff, (w, TILE_H), interpolation=cv2.INTER_NEAREST)  # map cells stay visible
        tile = colorize(big, scale) if scale.hi > 0 else np.full((TILE_H, w, 3), NEUTRAL, np.uint8)
    return draw_scale_bar(tile, scale)


def _caption_tile(w: int, h: int, lines: Sequence[str]) -> np.ndarray:
    tile = np.full((h, w, 3), 255, np.uint8)
    for i, line in enumerate(lines[: max(1, h // 15)]):
        cv2.putText(tile, _fit(line, w), (4, 13 + i * 15), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _fit(text: str, width: int) -> str:
    """Cut from the left (keeping the end, the distinctive part of a layer or file name) to fit."""
    text = text.encode("ascii", "replace").decode()
    while len(text) > 3 and cv2.getTextSize(text, FONT, 0.4, 1)[0][0] > width - 8:
        text = ".." + text[3:]
    return text


def _hstack(tiles: Sequence[np.ndarray]) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    out = np.full((h, sum(t.shape[1] for t in tiles) + GAP * (len(tiles) - 1), 3), 255, np.uint8)
    x = 0
    for t in tiles:
        out[: t.shape[0], x:x + t.shape[1]] = t
        x += t.shape[1] + GAP
    return out


def _vstack(lines: Sequence[np.ndarray]) -> np.ndarray:
    w = max(t.shape[1] for t in lines)
    out = np.full((sum(t.shape[0] for t in lines) + GAP * (len(lines) - 1), w, 3), 255, np.uint8)
    y = 0
    for t in lines:
        out[y:y + t.shape[0], : t.shape[1]] = t
        y += t.shape[0] + GAP
    return out


@dataclass
class CheckpointPages:
    """The checkpoint comparison and the pictures the summary wrote of it (names in the summary folder)."""

    comparison: Comparison
    diffs: Dict[str, DiffSheet] = field(default_factory=dict)  # image stem -> its difference sheet
    cka_file: Optional[str] = None  # the CKA table as a picture

    def to_json(self) -> Dict[str, Any]:
        return {**self.comparison.to_json(), "checkpoint_cka": self.cka_file,
                "diff_sheets": {stem: sheet.to_json() for stem, sheet in self.diffs.items()}}
