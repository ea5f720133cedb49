"""What a session draws on: a file path or an image in memory, made into the data stage's `Loaded` item.

A path is checked and decoded as the command line does (regular file, header, pixel limit,
EXIF orientation; featvis.data.images). An array is mmcv's convention, H x W x 3 uint8 BGR
(what `mmcv.imread` returns); a mask is H x W integer class indices (255: ignore) or a path.
Every image has a name, its id: the caller's, else the file's stem, else `image_<n>` from the
session's own count. Names are what the pictures are filed under in every backend, so pass
them (from a manifest, a dataset index) when several processes must agree on them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from featvis.data import images as files
from featvis.data.limits import DEFAULT_MAX_PIXELS
from featvis.errors import InputError

ImageLike = Union[str, Path, np.ndarray]
MaskLike = Union[None, str, Path, np.ndarray]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """`name` as a folder name: the characters a file system and W&B take as they are, others as `_`."""
    cleaned = _UNSAFE.sub("_", str(name)).strip("._") or "image"
    return cleaned[:120]


def item(image: ImageLike, mask: MaskLike = None, name: Optional[str] = None, number: int = 0,
         max_pixels: int = DEFAULT_MAX_PIXELS) -> files.Loaded:
    """One image (and its mask) as the pipeline's `Loaded`; InputError, one line, for what cannot be drawn."""
    if isinstance(image, (str, Path)):
        return _from_file(Path(image), mask, name, max_pixels)
    if not isinstance(image, np.ndarray):
        raise InputError(f"image of type {type(image).__name__}: pass a file path or an H x W x 3 uint8 BGR array "
                         "(mmcv.imread's convention)")
    bgr = _bgr(image)
    h, w = bgr.shape[:2]
    if h * w > max_pixels:
        raise InputError(f"image array of {w}x{h} ({w * h:,} pixels) is over max_image_pixels={max_pixels:,}: "
                         "downscale it, or raise max_image_pixels")
    stem = safe_name(name) if name is not None else f"image_{number:03d}"
    sample = files.Sample(stem=stem, image_path=Path(f"<array {stem}>"), mask_path=None, size=(h, w))
    gt = None if mask is None else _mask(mask, (h, w), stem)
    return files.Loaded(sample, bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt)


def _from_file(path: Path, mask: MaskLike, name: Optional[str], max_pixels: int) -> files.Loaded:
    mask_path = Path(mask) if isinstance(mask, (str, Path)) else None
    collected = files.collect(str(path), str(mask_path) if mask_path else None, max_pixels=max_pixels)
    if collected.problems or len(collected.samples) != 1:
        found = collected.problems[0].message if collected.problems else f"{path} names {len(collected.samples)} images"
        raise InputError(found if collected.problems else f"image {path} names {len(collected.samples)} images: "
                         "draw one file at a time (a list of files: draw_batch)")
    sample = collected.samples[0]
    if mask_path is not None and sample.mask_path is None:  # collect pairs masks by stem; a given mask is this one's
        sample.mask_path = mask_path
    if name is not None:
        sample.stem = safe_name(name)
    loaded = files.load(sample)
    if isinstance(mask, np.ndarray):
        loaded.gt = _mask(mask, loaded.image_bgr.shape[:2], sample.stem)
    elif loaded.gt is not None and loaded.gt.shape != loaded.image_bgr.shape[:2]:
        (mh, mw), (ih, iw) = loaded.gt.shape, loaded.image_bgr.shape[:2]
        raise InputError(f"gt_mask {sample.mask_path} is {mw}x{mh} but its image {path} is {iw}x{ih}: "
                         "pass the image's own mask")
    return loaded


def _bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        raise InputError(f"image array of shape {image.shape} has no colour channels: pass H x W x 3 BGR "
                         "(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InputError(f"image array of shape {image.shape}: pass H x W x 3 (BGR, mmcv.imread's convention)")
    if image.dtype != np.uint8:
        raise InputError(f"image array of dtype {image.dtype}: pass uint8 values 0..255 (BGR); a float image in "
                         "0..1 becomes one with (image * 255).round().astype(np.uint8)")
    return np.ascontiguousarray(image)


def _mask(mask: Any, shape: tuple, stem: str) -> np.ndarray:
    if isinstance(mask, (str, Path)):
        raise InputError(f"mask {mask} given as a path for an image array: pass the mask as an H x W array")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != tuple(shape):
        raise InputError(f"mask of shape {mask.shape} for image {stem} of {shape[1]}x{shape[0]}: pass H x W class "
                         "indices of the image's size (255: ignore)")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise InputError(f"mask of dtype {mask.dtype} for image {stem}: pass integer class indices (255: ignore)")
    return mask
