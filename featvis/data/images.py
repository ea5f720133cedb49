"""Images and ground-truth masks: found, checked up front, decoded one at a time.

`image` and `gt_mask` are a file, a folder or a glob; masks are matched to images by
file stem and are optional. `image=dataset:<split>` takes the images and ground truth
of the model config's `<split>_dataloader` dataset instead. Everything that can be
checked without decoding (that files exist, are images, and that each mask has its
image's size) is checked before the model is built. A bad image among good ones is
set aside as a `Problem` (reported, skipped); if no image is left, the first problem
is the job's error.
"""

from __future__ import annotations

import glob
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image, UnidentifiedImageError

from featvis.config.paths import resolve_asset, resolve_model_config
from featvis.data.names import Names
from featvis.errors import InputError
from featvis.model.options import Options, apply_options
from featvis.stderr import to_log

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
    """
    path = Path(resolve_asset(spec)).expanduser()
    if path.is_dir():
        files = _folder_images(path, spec, key)
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


def _folder_images(folder: Path, spec: str, key: str) -> List[Path]:
    """The images directly in `folder`, sorted; hidden files and subfolders logged, not read."""
    entries = sorted(folder.iterdir())
    hidden = [p.name for p in entries if p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    subfolders = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    if hidden:
        log.info("%s=%s: %d hidden file(s) skipped (%s)", key, spec, len(hidden), _some(hidden))
    if subfolders:
        log.warning("%s=%s: %d subfolder(s) not read (%s); to include them pass %s='%s/**/*.png' "
                    "(or the files' own extension)", key, spec, len(subfolders), _some(subfolders), key,
                    str(spec).rstrip("/"))
    return [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]


def _some(names: List[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def _header(path: Path, key: str) -> Tuple[Tuple[int, int], str]:
    try:
        with Image.open(path) as img:
            return (img.height, img.width), img.mode
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{key} {path} is not a readable image ({err.__class__.__name__}): "
                         "replace it or leave it out") from err


def collect(image_spec: str, mask_spec: Optional[str]) -> Collected:
    """Find and check every image and mask of the run, without decoding pixels."""
    masks: Dict[str, Path] = {}
    if mask_spec:
        for path in find_files(mask_spec, "gt_mask"):
            if path.stem in masks:
                raise InputError(f"gt_mask: two masks share the stem {path.stem!r} ({masks[path.stem]}, "
                                 f"{path}); make mask file names unique")
            masks[path.stem] = path
    return _check([(path, masks.get(path.stem)) for path in find_files(image_spec, "image")])


def _check(pairs: List[Tuple[Path, Optional[Path]]], **extra: object) -> Collected:
    """Read every image's and mask's header; a bad pair becomes a Problem, not an error."""
    out = Collected()
    names = Names()  # `..` from `...png` is no folder name; duplicates get _2, _3, ...
    for path, mask in pairs:
        try:
            size = _check_pair(path, mask)
        except InputError as err:
            out.problems.append(Problem(path, str(err)))
            continue
        out.samples.append(Sample(names.claim(path.stem), path, mask, size, **extra))
    return out


def _check_pair(path: Path, mask: Optional[Path]) -> Tuple[int, int]:
    size, _ = _header(path, "image")
    if mask is not None:
        mask_size, mode = _header(mask, "gt_mask")
        if mode not in ("L", "P", "I", "I;16", "1"):
            raise InputError(f"gt_mask {mask} is a {mode} image: featvis needs a single-channel "
                             "PNG whose pixel values are class indices")
        if mask_size != size:
            raise InputError(f"gt_mask {mask} is {mask_size[1]}x{mask_size[0]} but image {path} is "
                             f"{size[1]}x{size[0]}: a mask must have its image's size")
    return size


def collect_dataset(split: str, model_config: Path, data_root: Optional[str], cfg_options: Options = None,
                    scale: Optional[Sequence[int]] = None) -> Collected:
    """The images and ground-truth masks of `<split>_dataloader.dataset` in an mmseg config.

    The config is read with the job's model.cfg_options and model.scale applied (featvis.model.options),
    as the model will be: cfg_options may set the dataset's data_root; the `data_root` option wins over it.
    """

    cfg = apply_options(Config.fromfile(str(model_config)), cfg_options, scale)
    loader = cfg.get(f"{split}_dataloader")
    if not loader or "dataset" not in loader:
        splits = [k[: -len("_dataloader")] for k in cfg if k.endswith("_dataloader") and cfg[k]]
        raise InputError(f"image=dataset:{split}: the model config has no {split}_dataloader; "
                         f"use one of {sorted(splits) or 'none: pass image=<files> instead'}")
    ds_cfg = loader.dataset.copy()
    if data_root:
        ds_cfg.data_root = data_root
    ds_cfg.pipeline, ds_cfg.lazy_init = [], False
    init_default_scope(cfg.get("default_scope", "mmseg"))
    try:
        dataset = DATASETS.build(ds_cfg)
    except (AssertionError, FileNotFoundError, OSError, KeyError) as err:
        root = ds_cfg.get("data_root", "")
        raise InputError(f"image=dataset:{split}: cannot read the {ds_cfg.type} under {root!r} ({err}); "
                         "pass data_root=<folder holding it>") from err
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    if not infos:
        raise InputError(f"image=dataset:{split}: the {ds_cfg.type} under {ds_cfg.get('data_root', '')!r} "
                         "holds no images; pass data_root=<folder holding it>")
    pairs = [(Path(i["img_path"]), Path(i["seg_map_path"]) if i.get("seg_map_path") else None) for i in infos]
    hidden = [image.name for image, _ in pairs if image.name.startswith(".")]  # macOS's ._x.png beside x.png
    if hidden:
        log.info("image=dataset:%s: %d hidden file(s) skipped (%s)", split, len(hidden), _some(hidden))
        pairs = [(image, mask) for image, mask in pairs if not image.name.startswith(".")]
        if not pairs:
            raise InputError(f"image=dataset:{split}: the {ds_cfg.type} under {ds_cfg.get('data_root', '')!r} "
                             "holds only hidden files; pass data_root=<folder holding it>")
    return _check(pairs, label_map=infos[0].get("label_map"), reduce_zero_label=bool(infos[0].get("reduce_zero_label")))


def collect_any(image_spec: str, mask_spec: Optional[str], model_config: str,
                data_root: Optional[str] = None, cfg_options: Options = None,
                scale: Optional[Sequence[int]] = None) -> Collected:
    """`image` as a file, folder or glob, or `dataset:<split>` of the model config (with model.cfg_options)."""
    if image_spec.startswith(DATASET_PREFIX):

        return collect_dataset(image_spec[len(DATASET_PREFIX):], resolve_model_config(model_config), data_root,
                               cfg_options, scale)
    return collect(image_spec, mask_spec)


def choose(samples: List[Sample], max_images: Optional[int], how: str, seed: int) -> List[Sample]:
    """At most `max_images` of the samples: the first ones, or a seeded random choice in file order."""
    if max_images is None or max_images >= len(samples):
        return samples
    if how == "random":
        keep = sorted(random.Random(seed).sample(range(len(samples)), max_images))
        return [samples[i] for i in keep]
    return samples[:max_images]


def load(sample: Sample) -> Loaded:
    """Decode one sample's image (BGR and RGB) and mask."""
    with to_log(log, f"decoding {sample.image_path}"):  # libpng's errors: to the log
        bgr = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"image {sample.image_path} cannot be decoded: replace it or leave it out")
    gt = None
    if sample.mask_path is not None:
        try:
            with Image.open(sample.mask_path) as img:
                gt = _dataset_labels(np.array(img), sample)
        except OSError as err:
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
