"""One PNG encoding of a picture, shared by the backends that store PNG files.

Encoding a 1024-pixel-wide picture takes tens of milliseconds; with the local and the
W&B backend both on, a picture would be encoded twice. The visualizer hands every
backend's `add_panel` a `LazyPNG`; the first backend that needs the bytes encodes them
(cv2: RGB in, BGR PNG out), the others reuse them; MMEngine's backends get the picture
itself. `encode_all` encodes one image's pictures in parallel (OpenCV releases the GIL),
before the backends write them one by one.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np


class LazyPNG:
    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self._data: Optional[bytes] = None
        self._lock = threading.Lock()

    def data(self) -> bytes:
        with self._lock:
            if self._data is None:
                ok, buf = cv2.imencode(".png", cv2.cvtColor(self.rgb, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise OSError(f"cannot encode a {self.rgb.shape} picture as PNG")
                self._data = buf.tobytes()
            return self._data


def write_png(path: Path, rgb: np.ndarray, png: Optional[LazyPNG] = None) -> None:
    """Write `rgb` to `path` as PNG, using `png`'s encoding when given."""
    Path(path).write_bytes((png if png is not None else LazyPNG(rgb)).data())


_POOL: Optional[ThreadPoolExecutor] = None


def encode_all(pngs: Iterable[LazyPNG]) -> None:
    """Encode `pngs` on up to 4 threads (one per CPU core)."""
    global _POOL
    pngs = list(pngs)
    workers = min(4, os.cpu_count() or 1)
    if workers < 2 or len(pngs) < 2:
        for png in pngs:
            png.data()
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featvis-png")
    for _ in _POOL.map(LazyPNG.data, pngs):
        pass
