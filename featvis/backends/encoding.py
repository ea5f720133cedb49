"""Picture files as each backend wants them: format, quality, display size; each made once.

A backend that stores files declares its `PictureFormat` (featvis's local backend: PNG at
full size by default; W&B: JPEG at quality 90, at most 1024 pixels on the longer side, since
its panels are a few hundred pixels wide). The visualizer wraps each picture in an
`Encoded`, which encodes it at most once per format whichever backends and threads ask;
`in_parallel` runs one image's encodings (and the local backend's writes) on one thread per
core (OpenCV, ISA-L and file writes release the GIL, so threads scale).

Shrinking is OpenCV's INTER_AREA (an average over each output pixel's footprint: no
aliasing on heat maps and label edges); PNG is lossless, so a PNG at full size decodes to
exactly the drawn picture. PNG is written by `png_bytes`: the Sub filter on every row and
a level-1 deflate by Intel's ISA-L (the `isal` package), which takes a fifth of the time
OpenCV's libpng does at about the same size (benchmarks/bench_encoding.py); JPEG and WebP
are OpenCV's.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
from isal import isal_zlib

from featvis.errors import ConfigError

FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}  # format -> file suffix
SUFFIXES = tuple(FORMATS.values())


@dataclass(frozen=True)
class PictureFormat:
    """How a backend stores pictures: file format, its quality (jpeg, webp), the longest side."""

    image_format: str = "png"  # png (lossless) | jpeg | webp
    quality: int = 90  # 1..100, for jpeg and webp; png ignores it
    max_side: Optional[int] = None  # pictures with a longer side are shrunk to it; None = as drawn

    def __post_init__(self) -> None:
        if self.image_format not in FORMATS:
            raise ConfigError(f"image_format={self.image_format!r} is not a picture format: "
                              f"use one of {sorted(FORMATS)}")
        if not 1 <= int(self.quality) <= 100:
            raise ConfigError(f"quality={self.quality} must be between 1 and 100")
        if self.max_side is not None and int(self.max_side) < 16:
            raise ConfigError(f"max_side={self.max_side} must be at least 16 pixels, or null for full size")

    @property
    def key(self) -> Tuple[str, Optional[int], Optional[int]]:
        """What makes two formats' bytes differ: PNG's quality does not."""
        return self.image_format, None if self.image_format == "png" else int(self.quality), self.max_side

    @property
    def suffix(self) -> str:
        return FORMATS[self.image_format]

    def size(self, height: int, width: int) -> Tuple[int, int]:
        """(height, width) of a picture of this size once stored: shrunk to fit max_side, aspect kept."""
        longest = max(height, width)
        if self.max_side is None or longest <= self.max_side:
            return height, width
        factor = self.max_side / longest
        return max(1, round(height * factor)), max(1, round(width * factor))

    def shrink(self, rgb: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The picture (or label map) at its stored size; the same array when that is its size."""
        h, w = rgb.shape[:2]
        size = self.size(h, w)
        if size == (h, w):
            return rgb
        return cv2.resize(rgb, (size[1], size[0]), interpolation=interpolation)

    def encode(self, rgb: np.ndarray) -> bytes:
        """An RGB uint8 picture -> this format's bytes (shrunk first when it is too large)."""
        if self.image_format == "png":
            return png_bytes(self.shrink(rgb))
        picture = cv2.cvtColor(self.shrink(rgb), cv2.COLOR_RGB2BGR)
        params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)],
                  "webp": [cv2.IMWRITE_WEBP_QUALITY, int(self.quality)]}[self.image_format]
        ok, buf = cv2.imencode(self.suffix, picture, params)
        if not ok:
            raise OSError(f"cannot encode a {rgb.shape} picture as {self.image_format}")
        return buf.tobytes()


PNG = PictureFormat()  # lossless, full size: local files, contact sheets


class Encoded:
    """One picture and its encodings, each made once, whichever backends and threads ask."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self._data: Dict[Tuple, bytes] = {}  # PictureFormat.key -> bytes
        self._locks: Dict[Tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def data(self, fmt: PictureFormat = PNG) -> bytes:
        key = fmt.key
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._data:
                self._data[key] = fmt.encode(self.rgb)
            return self._data[key]


def write_picture(path: Path, rgb: np.ndarray, encoded: Optional[Encoded] = None,
                  fmt: PictureFormat = PNG) -> None:
    """Write `rgb` to `path` in `fmt`, using `encoded`'s bytes when given."""
    Path(path).write_bytes((encoded if encoded is not None else Encoded(rgb)).data(fmt))


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write `rgb` to `path` as a full-size PNG."""
    write_picture(path, rgb)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 picture (H, W, 3) as PNG file contents: 8-bit truecolour, no interlace.

    Every row gets filter type 1 (Sub: each byte minus the byte one pixel to its left,
    modulo 256), the filter OpenCV's fast mode uses, computed by numpy for the whole picture;
    the filtered rows are deflated by ISA-L at level 1 (its fastest with match search: about
    20 ms for a 1024x2048 picture, half of zlib-ng's Huffman-only deflate, and smaller;
    it releases the GIL, so pictures are encoded on all cores).
    """
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"png_bytes takes an (H, W, 3) RGB picture, not {rgb.shape}")
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)
    filtered = np.empty((h, w * 3 + 1), np.uint8)
    filtered[:, 0] = 1  # Sub
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8: wraps modulo 256, as PNG wants
    idat = isal_zlib.compress(filtered, 1)  # a zlib stream (header, deflate, Adler-32), as PNG's IDAT wants
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, adaptive, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


_POOL: Optional[ThreadPoolExecutor] = None


def workers() -> int:
    """Encoder threads: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def in_parallel(tasks: Sequence[Callable[[], Any]]) -> None:
    """Run the tasks on one thread per core and wait for all; the first error is raised."""
    global _POOL
    if workers() < 2 or len(tasks) < 2:
        for task in tasks:
            task()
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="featvis-encode")
    for _ in _POOL.map(lambda task: task(), tasks):
        pass
