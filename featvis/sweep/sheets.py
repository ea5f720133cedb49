"""Contact sheets: one picture per input image comparing the jobs of a sweep, a row per job.

A row is a label tile with the job's name (and its status when not ok), then the job's
input, prediction and feature maps, each captioned with its panel name, read from the
picture files its result record names (featvis.sweep.results). A job that ran without
the local backend has no picture files: its row says so in words instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from cachetools import LRUCache

from featvis.render.draw import grid
from featvis.sweep.results import NO_PICTURES, JobRecord

TILE_H = 192  # height of every picture in a contact sheet
BAND = 18  # caption band under each picture
LABEL_W = 220  # the job-name tile at the start of each row
GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX

# Captioned tiles of panel files, kept between the summaries of one sweep: under the basic
# launcher the summary is rewritten after every job, and re-reading every earlier job's
# full-size PNGs each time would cost O(jobs^2). Keyed by the file's stat, so a re-run
# job's new pictures are read again; at most TILE_CACHE_BYTES are kept.
TILE_CACHE_BYTES = 256 * 2 ** 20
_TILES: "LRUCache[Tuple[Any, ...], np.ndarray]" = LRUCache(maxsize=TILE_CACHE_BYTES, getsizeof=lambda t: t.nbytes)


@dataclass
class SheetLayout:
    """Where things are on a sheet: `rows` x `cols` tiles of `tile` (h, w) pixels, `gap` apart."""

    rows: int
    cols: int
    tile: Tuple[int, int]
    gap: int
    size: Tuple[int, int]  # the sheet's (h, w)
    jobs: List[str]  # the job of each row, top to bottom
    file: str = ""  # the sheet's file name in the summary folder, once written

    def to_json(self) -> Dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "tile": list(self.tile), "gap": self.gap,
                "size": list(self.size), "jobs": list(self.jobs), "file": self.file}


@dataclass
class Sheet:
    rgb: np.ndarray
    layout: SheetLayout
    strips: Dict[str, np.ndarray] = field(default_factory=dict)  # job name -> its row, without the label


def sheet_stems(jobs: Sequence[JobRecord]) -> List[str]:
    """The images that get a contact sheet, in the order the jobs drew them: those with a picture to show."""
    stems: List[str] = []
    for job in jobs:
        stems += [s for s in job.images if s not in stems]
    return [s for s in stems if any(j.picture(s, p) for j in jobs for p in j.row_panels(s))]


def contact_sheet(jobs: Sequence[JobRecord], stem: str) -> Sheet:
    """One image's sheet: a row per job that drew it, label tile + input + prediction + feature maps."""
    rows = [j for j in jobs if j.row_panels(stem)]
    shown = [j for j in rows if j.has_pictures] or rows
    inputs = [j.picture(stem, "input") for j in shown]
    first = _read_rgb(inputs[0]) if inputs[0] is not None else None
    aspect = first.shape[1] / first.shape[0] if first is not None else 4 / 3
    w = max(LABEL_W // 2, round(TILE_H * aspect))
    cols = max(len(j.row_panels(stem)) for j in shown)
    blank = np.full((TILE_H + BAND, w, 3), 255, np.uint8)
    tiles: List[np.ndarray] = []
    strips: Dict[str, np.ndarray] = {}
    for job in rows:
        label = blank.copy()
        lines = _wrap(job.name, w)
        if job.status != "ok":
            lines.append(f"[{job.status}]")
        _text(label, lines[: (TILE_H + BAND) // 15], 0)
        if job.has_pictures:
            row = [_panel_tile(job.picture(stem, p), p.split("/", 1)[-1], w) for p in job.row_panels(stem)]
        else:
            row = [_note_tile(NO_PICTURES, w)]
        row += [blank] * (cols - len(row))
        strips[job.name] = grid(row, 1, cols, GAP)
        tiles += [label] + row
    sheet = grid(tiles, len(rows), cols + 1, GAP)
    layout = SheetLayout(rows=len(rows), cols=cols + 1, tile=(TILE_H + BAND, w), gap=GAP,
                         size=(int(sheet.shape[0]), int(sheet.shape[1])), jobs=[j.name for j in rows])
    return Sheet(sheet, layout, strips)




def _read_rgb(path: Path) -> Optional[np.ndarray]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale to fit (h, w), keeping the aspect ratio, centred on white."""
    scale = min(h / img.shape[0], w / img.shape[1])
    nh, nw = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    out = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _text(tile: np.ndarray, lines: Sequence[str], top: int, scale: float = 0.4) -> None:
    for i, line in enumerate(lines):
        cv2.putText(tile, line, (4, top + 13 + i * 15), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _too_wide(text: str, width: int, scale: float) -> bool:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 8


def _fit_text(text: str, width: int, scale: float = 0.4) -> str:
    """Cut `text` from the left (keeping its end, the distinctive part of a layer name) to fit."""
    text = text.encode("ascii", "replace").decode()
    while len(text) > 3 and _too_wide(text, width, scale):
        text = ".." + text[3:]
    return text


def _wrap(text: str, width: int, scale: float = 0.4) -> List[str]:
    """A job name in lines that fit `width`: one override a line, broken anywhere when too long."""
    lines: List[str] = []
    for part in text.encode("ascii", "replace").decode().split(","):
        line = ""
        for ch in part:
            if _too_wide(line + ch, width, scale):
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    return lines


def _wrap_words(text: str, width: int, scale: float = 0.4) -> List[str]:
    lines: List[str] = []
    for word in text.split():
        if lines and not _too_wide(f"{lines[-1]} {word}", width, scale):
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _note_tile(note: str, w: int) -> np.ndarray:
    """A white tile with `note` in words, where the job's pictures would be."""
    tile = np.full((TILE_H + BAND, w, 3), 255, np.uint8)
    _text(tile, _wrap_words(note, w), TILE_H // 2 - 15)
    return tile


def _captioned(img: np.ndarray, caption: str, w: int) -> np.ndarray:
    tile = np.full((TILE_H + BAND, w, 3), 255, np.uint8)
    tile[:TILE_H] = _fit(img, TILE_H, w)
    _text(tile, [_fit_text(caption, w)], TILE_H - 1)
    return tile


def _panel_tile(path: Optional[Path], caption: str, w: int) -> np.ndarray:
    """The captioned tile of a picture file; grey when the file is missing or unreadable."""
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        stat = None
    key = None if stat is None else (str(path), stat.st_mtime_ns, stat.st_size, caption, w)
    if key is not None and key in _TILES:
        return _TILES[key]
    img = _read_rgb(path) if key is not None else None
    tile = _captioned(img if img is not None else np.full((TILE_H, w, 3), 200, np.uint8), caption, w)
    if key is not None:
        _TILES[key] = tile
    return tile
