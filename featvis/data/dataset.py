"""`image=dataset:<split>`: the images and ground truth of the model config's `<split>_dataloader` dataset.

The config is read with the job's model.cfg_options and model.scale applied (featvis.data.mmseg_config),
as the model will be; the dataset is built by mmseg's registry without its pipeline, and its
entries are checked like any image and mask (featvis.data.images), with its label_map and
reduce_zero_label kept for decoding the masks as mmseg's LoadAnnotations does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from featvis.data.images import DATASET_PREFIX, Collected, InputError, check_pairs, collect, some_names
from featvis.data.limits import DEFAULT_MAX_PIXELS
from featvis.data.mmseg_config import Options, apply_options
from featvis.data.paths import resolve_model_config

log = logging.getLogger("featvis.data.images")


def collect_dataset(split: str, model_config: Path, data_root: Optional[str], cfg_options: Options = None,
                    scale: Optional[Sequence[int]] = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Collected:
    """The images and ground-truth masks of `<split>_dataloader.dataset` in an mmseg config.

    The config is read with the job's model.cfg_options and model.scale applied (featvis.data.mmseg_config),
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
        log.info("image=dataset:%s: %d hidden file(s) skipped (%s)", split, len(hidden), some_names(hidden))
        pairs = [(image, mask) for image, mask in pairs if not image.name.startswith(".")]
        if not pairs:
            raise InputError(f"image=dataset:{split}: the {ds_cfg.type} under {ds_cfg.get('data_root', '')!r} "
                             "holds only hidden files; pass data_root=<folder holding it>")
    return check_pairs(pairs, max_pixels, label_map=infos[0].get("label_map"),
                  reduce_zero_label=bool(infos[0].get("reduce_zero_label")))


def collect_any(image_spec: str, mask_spec: Optional[str], model_config: str,
                data_root: Optional[str] = None, cfg_options: Options = None,
                scale: Optional[Sequence[int]] = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Collected:
    """`image` as a file, folder or glob, or `dataset:<split>` of the model config (with model.cfg_options);
    `max_pixels`: max_image_pixels."""
    if image_spec.startswith(DATASET_PREFIX):

        return collect_dataset(image_spec[len(DATASET_PREFIX):], resolve_model_config(model_config), data_root,
                               cfg_options, scale, max_pixels)
    return collect(image_spec, mask_spec, max_pixels)
