"""An image's or mask's header, read before any pixel is decoded: its size as drawn, mode and EXIF orientation.

Only regular files are opened (featvis.io.file_kind: a FIFO would block PIL's open); a size
over max_image_pixels is an InputError before decoding (PIL's own DecompressionBombError and
warning never reach the user: its limit is lifted under a lock while featvis's is checked);
the EXIF orientation (PIL's `ImageOps.exif_transpose` rules, tag 0x0112) is read from the
header, and `oriented` turns decoded pixels the same way, so header, image and mask agree.
A PNG's orientation is taken from its chunks before the pixels only (PIL's PNG getexif()
would decode it).
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from featvis.data.limits import DECODER_MAX_PIXELS, DEFAULT_MAX_PIXELS
from featvis.errors import InputError
from featvis.io import FILE, file_kind

log = logging.getLogger("featvis.data.images")

ORIENTATION = 0x0112  # the EXIF orientation tag
_PIL_LIMIT = threading.Lock()  # PIL's MAX_IMAGE_PIXELS is process-wide: lifted under this lock only


@dataclass(frozen=True)
class Header:
    size: Tuple[int, int]  # (height, width) as drawn: after the EXIF orientation
    mode: str  # PIL's mode: L, P, RGB, ...
    orientation: int  # 1 (as stored) to 8




def read_header(path: Path, key: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Size (as drawn, after the EXIF orientation), mode and orientation from the file's header; no pixel
    is decoded. InputError when it is no regular file, no image, or over `max_pixels` (max_image_pixels)."""
    kind = file_kind(path)
    if kind != FILE:  # a FIFO would block PIL's open; a dataset list or a mask can name one
        raise InputError(f"{key} {path} is {kind or 'missing'}, not an image file: replace it or leave it out")
    try:
        with open_header(path) as img:
            width, height = img.size
            orientation = orientation_of(img)
            mode = img.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{key} {path} is not a readable image ({err.__class__.__name__}): "
                         "replace it or leave it out") from err
    if width * height > max_pixels:
        raise InputError(f"{key} {path} is {width}x{height} ({width * height:,} pixels), over max_image_pixels="
                         f"{max_pixels:,}: downscale it, or raise max_image_pixels (at most {DECODER_MAX_PIXELS:,}) "
                         "if the machine has the memory to draw it")
    if orientation in (5, 6, 7, 8):  # turned by a quarter: width and height swap
        width, height = height, width
    return Header((height, width), mode, orientation)


def open_header(path: Path) -> Image.Image:
    """PIL's lazy open (the header only), without its decompression-bomb warning or error: featvis's
    max_image_pixels is checked on the size instead, before anything is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass
    with _PIL_LIMIT:  # over twice PIL's limit: read the header again with PIL's check off
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def orientation_of(img: Image.Image) -> int:
    """The EXIF orientation (1-8) as PIL's exif_transpose reads it; 1 when there is none or it is broken."""
    try:
        # a PNG's getexif() decodes the image to reach chunks after its pixels: the base class's reads
        # what the header held (eXIf, XMP before the pixels)
        exif = Image.Image.getexif(img) if img.format == "PNG" else img.getexif()
        value = exif.get(ORIENTATION, 1)
    except Exception as err:  # noqa: BLE001 - malformed EXIF (struct.error, SyntaxError, ...): as stored
        log.info("%s: EXIF orientation unreadable (%s): drawn as stored", getattr(img, "filename", "?"), err)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` (H, W[, C]) turned as EXIF `orientation` says, the way PIL's ImageOps.exif_transpose turns an image."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:  # transpose
        out = pixels.swapaxes(0, 1)
    elif orientation == 6:  # a quarter turn clockwise
        out = pixels.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:  # transverse
        out = pixels.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # a quarter turn anticlockwise
        out = pixels.swapaxes(0, 1)[::-1]
    else:
        return pixels
    return np.ascontiguousarray(out)
