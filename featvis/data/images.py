"""Images and ground-truth masks: found, checked up front, decoded one at a time.

`image` and `gt_mask` are a file, a folder or a glob; masks are matched to images by
file stem and are optional. `image=dataset:<split>` takes the images and ground truth
of the model config's `<split>_dataloader` dataset instead. Everything that can be
checked without decoding (that files exist, are images, and that each mask has its
image's size) is checked before the model is built. A bad image among good ones is
set aside as a `Problem` (reported, skipped); if no image is left, the first problem
is the job's error.

Headers only, before any pixel is decoded (featvis.data.headers, PIL's lazy open):

- only regular files are opened: a FIFO (which would block), a socket, a device, a symbolic
  link loop or a dangling link is found by `stat` alone. In a folder (or a glob) such
  entries are skipped and counted in one `featvis: warning:` line naming a few; named
  alone they are an error saying what they are;
- an image or mask over `max_image_pixels` (width x height from the header; default PIL's
  89,478,485) is a Problem like any unreadable image, refused before decoding: a 20 KB PNG
  can claim 60000x60000 pixels and a 13000x13000 one would take gigabytes to draw.
  PIL's own DecompressionBombError/Warning never reach the user: featvis's limit replaces
  them (a header over PIL's limit is read again with PIL's check off, under a lock);
- sizes are compared as the image will be drawn: the EXIF orientation (PIL's
  `ImageOps.exif_transpose` rules, tag 0x0112) is read from the header, the image is
  decoded by OpenCV with IMREAD_IGNORE_ORIENTATION and turned by `oriented`, and so is
  its mask, so that header, decoded image and mask always agree (OpenCV's IMREAD_COLOR
  would turn a JPEG itself while PIL reads the mask as stored). A PNG's orientation is
  taken from its chunks before the pixels only: PIL's PNG getexif() would decode it.
"""

from __future__ import annotations

import glob
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from featvis.data.headers import Header, open_header, oriented, read_header
from featvis.data.limits import DEFAULT_MAX_PIXELS
from featvis.data.names import Names
from featvis.data.paths import resolve_asset
from featvis.errors import InputError
from featvis.io import FILE, FOLDER, file_kind
from featvis.stderr import to_log, warn

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

log = logging.getLogger(__name__)

DATASET_PREFIX = "dataset:"


@dataclass
class Sample:
    stem: str  # unique within the run, safe as a folder name (featvis.data.names); names its pictures
    image_path: Path
    mask_path: Optional[Path]
    size: Tuple[int, int]  # (height, width)
    label_map: Optional[Dict[int, int]] = None  # dataset masks: mmseg's label_map ...
    reduce_zero_label: bool = False  # ... and reduce_zero_label, applied as LoadAnnotations does
    orientation: int = 1  # the image's EXIF orientation (1-8), applied when decoding; `size` is after it
    mask_orientation: int = 1  # the mask's, applied the same way


@dataclass
class Problem:
    path: Path
    message: str  # one line: what is wrong and how to fix it


@dataclass
class Collected:
    samples: List[Sample] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)

    def usable(self) -> List[Sample]:
        """The samples to run; when none is left, the first problem is the error."""
        if not self.samples:
            raise InputError(self.problems[0].message if self.problems else "no image to run on")
        return self.samples


@dataclass
class Loaded:
    sample: Sample
    image_bgr: np.ndarray  # what mmseg's pipeline expects
    image_rgb: np.ndarray  # what gets drawn and logged
    gt: Optional[np.ndarray]  # (H, W) label indices
    gt_note: Optional[str] = None  # what is wrong with the mask's values (featvis.data.masks), for its caption


def find_files(spec: str, key: str) -> List[Path]:
    """The image files named by a file, a folder (its images, sorted) or a glob.

    A folder's hidden files (`.x.png`, macOS's `._x.png`) are skipped and its subfolders
    are not read; the log names both. A glob skips hidden names unless it asks for them.
    Entries with an image's name that are no regular file (a FIFO, a socket, a symbolic
    link loop, a dangling link) are found by `stat`, never opened, and said in one warning.
    """
    path = Path(resolve_asset(spec)).expanduser()
    kind = file_kind(path)
    if kind == FOLDER:
        files = _folder_images(path, spec, key)
        if not files:
            raise InputError(f"{key}={spec!r} is a folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if kind == FILE:
        return [path]
    if kind is not None:  # there, but no file: a FIFO would block, a loop never resolves
        raise InputError(f"{key}={spec!r} is {kind}, not an image file: pass an image file, a folder or a glob")
    if glob.has_magic(str(path)):
        files = _regular(sorted(Path(p) for p in glob.glob(str(path), recursive=True)), spec, key)
        if not files:
            raise InputError(f"{key}={spec!r} matches no file: check the pattern")
        return files
    raise InputError(f"{key}={spec!r} does not exist: pass an image file, a folder or a glob "
                     f"such as {key}='data/*.png'")


def _regular(paths: List[Path], spec: str, key: str) -> List[Path]:
    """The regular files among `paths` (folders left out quietly); the others said in one warning line."""
    files, others = [], []
    for path in paths:
        kind = file_kind(path)
        if kind == FILE:
            files.append(path)
        elif kind not in (FOLDER, None):
            others.append(f"{path.name} ({kind})")
    if others:
        warn(log, f"{key}={spec}: {len(others)} entr{'y' if len(others) == 1 else 'ies'} skipped, not "
                  f"readable files: {some_names(others, 3)}; replace them with image files or remove them")
    return files


def _folder_images(folder: Path, spec: str, key: str) -> List[Path]:
    """The images directly in `folder`, sorted; hidden files and subfolders logged, not read; entries with
    an image's name that are no regular file said in one warning line."""
    entries = sorted(folder.iterdir())
    hidden = [p.name for p in entries if p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    kinds = {p: file_kind(p) for p in entries if not p.name.startswith(".")}
    subfolders = [p.name for p, kind in kinds.items() if kind == FOLDER]
    if hidden:
        log.info("%s=%s: %d hidden file(s) skipped (%s)", key, spec, len(hidden), some_names(hidden))
    if subfolders:
        log.warning("%s=%s: %d subfolder(s) not read (%s); to include them pass %s='%s/**/*.png' "
                    "(or the files' own extension)", key, spec, len(subfolders), some_names(subfolders), key,
                    str(spec).rstrip("/"))
    named = [p for p, kind in kinds.items() if p.suffix.lower() in IMAGE_SUFFIXES and kind != FOLDER]
    return _regular(named, spec, key)


def some_names(names: List[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def collect(image_spec: str, mask_spec: Optional[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Collected:
    """Find and check every image and mask of the run, without decoding pixels."""
    masks: Dict[str, Path] = {}
    if mask_spec:
        for path in find_files(mask_spec, "gt_mask"):
            if path.stem in masks:
                raise InputError(f"gt_mask: two masks share the stem {path.stem!r} ({masks[path.stem]}, "
                                 f"{path}); make mask file names unique")
            masks[path.stem] = path
    return check_pairs([(path, masks.get(path.stem)) for path in find_files(image_spec, "image")], max_pixels)


def check_pairs(pairs: List[Tuple[Path, Optional[Path]]], max_pixels: int = DEFAULT_MAX_PIXELS,
           **extra: object) -> Collected:
    """Read every image's and mask's header; a bad pair becomes a Problem, not an error."""
    out = Collected()
    names = Names()  # `..` from `...png` is no folder name; duplicates get _2, _3, ...
    for path, mask in pairs:
        # claimed before the check: an image's name follows from the list alone, whichever images a
        # process finds readable, so every process (and a later re-run) gives it the same one
        name = names.claim(path.stem)
        try:
            image, gt = _check_pair(path, mask, max_pixels)
        except InputError as err:
            out.problems.append(Problem(path, str(err)))
            continue
        out.samples.append(Sample(name, path, mask, image.size, **extra,
                                  orientation=image.orientation, mask_orientation=gt.orientation if gt else 1))
    return out


def _check_pair(path: Path, mask: Optional[Path], max_pixels: int) -> Tuple[Header, Optional[Header]]:
    image = read_header(path, "image", max_pixels)
    if mask is None:
        return image, None
    gt = read_header(mask, "gt_mask", max_pixels)
    if gt.mode not in ("L", "P", "I", "I;16", "1"):
        raise InputError(f"gt_mask {mask} is a {gt.mode} image: featvis needs a single-channel "
                         "PNG whose pixel values are class indices")
    if gt.size != image.size:
        turned = (f" as shown (its EXIF orientation {image.orientation} turns the stored "
                  f"{image.size[0]}x{image.size[1]})" if image.orientation in (5, 6, 7, 8) else "")
        raise InputError(f"gt_mask {mask} is {gt.size[1]}x{gt.size[0]} but image {path} is "
                         f"{image.size[1]}x{image.size[0]}{turned}: a mask must have its image's size")
    return image, gt


def choose(samples: List[Sample], max_images: Optional[int], how: str, seed: int) -> List[Sample]:
    """At most `max_images` of the samples: the first ones, or a seeded random choice in file order."""
    if max_images is None or max_images >= len(samples):
        return samples
    if how == "random":
        keep = sorted(random.Random(seed).sample(range(len(samples)), max_images))
        return [samples[i] for i in keep]
    return samples[:max_images]


def load(sample: Sample) -> Loaded:
    """Decode one sample's image (BGR and RGB) and mask, both turned by their EXIF orientation."""
    with to_log(log, f"decoding {sample.image_path}"):  # libpng's errors: to the log
        bgr = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise InputError(f"image {sample.image_path} cannot be decoded: replace it or leave it out")
    bgr = oriented(bgr, sample.orientation)
    gt = None
    if sample.mask_path is not None:
        h, w = sample.size  # the mask's too: checked against max_image_pixels with the image's
        over_pil = bool(Image.MAX_IMAGE_PIXELS) and h * w > Image.MAX_IMAGE_PIXELS
        opener = open_header if over_pil else Image.open  # warnings.catch_warnings is not thread-safe: only then
        try:
            with opener(sample.mask_path) as img:
                gt = _dataset_labels(oriented(np.array(img), sample.mask_orientation), sample)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"gt_mask {sample.mask_path} cannot be decoded: replace it or leave it out") from err
    return Loaded(sample, bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt)


def _dataset_labels(gt: np.ndarray, sample: Sample) -> np.ndarray:
    """Apply label_map and reduce_zero_label the way mmseg's LoadAnnotations does."""
    if sample.label_map:
        mapped = gt.copy()
        for old, new in sample.label_map.items():
            mapped[gt == old] = new
        gt = mapped
    if sample.reduce_zero_label:  # 0 (other) -> 255 (ignored), every class one down
        gt = gt.astype(np.uint8).copy()
        gt[gt == 0] = 255
        gt = gt - 1
        gt[gt == 254] = 255
    return gt


def iter_loaded(samples: List[Sample], problems: List[Problem]) -> Iterator[Loaded]:
    """Decode each sample; one that cannot be decoded is added to `problems` and skipped."""
    for sample in samples:
        try:
            yield load(sample)
        except InputError as err:
            problems.append(Problem(sample.image_path, str(err)))
