"""Images and ground-truth masks: found, checked up front, decoded one at a time.

`image` and `gt_mask` are a file, a folder or a glob. Masks are matched to images by
file stem and are optional. Everything that can be checked without decoding (that
files exist, are images, and that each mask has its image's size) is checked before
the model is built, so bad input fails fast and never leaves half-written results.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from featvis.errors import InputError
from featvis.paths import resolve_asset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Sample:
    stem: str  # unique within the run; names the pictures of this image
    image_path: Path
    mask_path: Optional[Path]
    size: Tuple[int, int]  # (height, width)


@dataclass
class Loaded:
    sample: Sample
    image_bgr: np.ndarray  # what mmseg's pipeline expects
    image_rgb: np.ndarray  # what gets drawn and logged
    gt: Optional[np.ndarray]  # (H, W) label indices


def find_files(spec: str, key: str) -> List[Path]:
    """The image files named by a file, a folder (its images, sorted) or a glob."""
    path = Path(resolve_asset(spec)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{key}={spec!r} is a folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if path.is_file():
        return [path]
    if glob.has_magic(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"{key}={spec!r} matches no file: check the pattern")
        return files
    raise InputError(f"{key}={spec!r} does not exist: pass an image file, a folder or a glob "
                     f"such as {key}='data/*.png'")


def _header(path: Path, key: str) -> Tuple[Tuple[int, int], str]:
    try:
        with Image.open(path) as img:
            return (img.height, img.width), img.mode
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{key} {path} is not a readable image ({err.__class__.__name__}): "
                         "replace it or leave it out") from err


def collect(image_spec: str, mask_spec: Optional[str]) -> List[Sample]:
    """Find and check every image and mask of the run, without decoding pixels."""
    masks: Dict[str, Path] = {}
    if mask_spec:
        for path in find_files(mask_spec, "gt_mask"):
            if path.stem in masks:
                raise InputError(f"gt_mask: two masks share the stem {path.stem!r} ({masks[path.stem]}, "
                                 f"{path}); make mask file names unique")
            masks[path.stem] = path
    samples: List[Sample] = []
    seen: Dict[str, int] = {}
    for path in find_files(image_spec, "image"):
        size, _ = _header(path, "image")
        mask = masks.get(path.stem)
        if mask is not None:
            mask_size, mode = _header(mask, "gt_mask")
            if mode not in ("L", "P", "I", "I;16", "1"):
                raise InputError(f"gt_mask {mask} is a {mode} image: featvis needs a single-channel "
                                 "PNG whose pixel values are class indices")
            if mask_size != size:
                raise InputError(f"gt_mask {mask} is {mask_size[1]}x{mask_size[0]} but image {path} is "
                                 f"{size[1]}x{size[0]}: a mask must have its image's size")
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stem = path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}"
        samples.append(Sample(stem, path, mask, size))
    return samples


def load(sample: Sample) -> Loaded:
    """Decode one sample's image (BGR and RGB) and mask."""
    bgr = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"image {sample.image_path} cannot be decoded: replace it or leave it out")
    gt = None
    if sample.mask_path is not None:
        with Image.open(sample.mask_path) as img:
            gt = np.array(img)
    return Loaded(sample, bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt)


def iter_loaded(samples: List[Sample]) -> Iterator[Loaded]:
    for sample in samples:
        yield load(sample)
