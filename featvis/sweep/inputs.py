"""A sweep's input list, written once: every shard of a job draws its slice of the same list.

The first shard job of a sweep to collect a job's images (`shared`) writes the list to
`<sweep dir>/featvis_inputs/<key>.json`, created only if absent (a hard link of a finished
temporary file: two shards that race both read the one that was linked first, and no reader
sees half a file); every other shard, on any machine that sees the sweep folder, reads it. So
the shards agree on the images and their names even when the folder changes while the sweep
runs, and a re-launched sweep draws what the first launch listed. The key is what decides the
list (image, gt_mask, dataset settings, max_images, sample, seed, max_image_pixels), so jobs that
draw the same images share one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Tuple

from featvis.data import images as inputs
from featvis.data.mmseg_config import canonical, plain

log = logging.getLogger(__name__)

INPUTS = "featvis_inputs"
VERSION = 1
Listed = Tuple[List[inputs.Sample], List[inputs.Problem]]


def key_of(cfg: Any) -> str:
    """What decides a job's input list, as a short hash."""
    what = {"image": cfg.image, "gt_mask": cfg.gt_mask, "data_root": cfg.data_root,
            "max_images": cfg.max_images, "sample": str(getattr(cfg.sample, "name", cfg.sample)), "seed": cfg.seed,
            "max_image_pixels": cfg.max_image_pixels}
    if str(cfg.image).startswith(inputs.DATASET_PREFIX):  # the dataset's own settings decide it too
        what.update(config=cfg.model.config, cfg_options=canonical(cfg.model.cfg_options),
                    scale=plain(cfg.model.scale))
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shared(sweep_dir: Path, key: str, make: Callable[[], Listed]) -> Listed:
    """The sweep's list for `key`: read, or made with `make()` and written when no shard wrote it yet."""
    path = Path(sweep_dir) / INPUTS / f"{key}.json"
    if path.is_file():
        return read(path)
    listed = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(to_json(*listed), f)
        try:
            os.link(tmp, path)  # created whole, and only if absent
        except FileExistsError:  # another shard listed them first: its list is the sweep's
            return read(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("the sweep's input list: %s (%d images)", path, len(listed[0]))
    return listed


def to_json(samples: List[inputs.Sample], problems: List[inputs.Problem]) -> dict:
    return {"version": VERSION, "samples": [_sample(s) for s in samples],
            "problems": [{"path": str(p.path), "message": p.message} for p in problems]}


def _sample(s: inputs.Sample) -> dict:
    return {"stem": s.stem, "image": str(s.image_path), "mask": None if s.mask_path is None else str(s.mask_path),
            "size": list(s.size),
            "label_map": None if s.label_map is None else [[int(k), int(v)] for k, v in s.label_map.items()],
            "reduce_zero_label": bool(s.reduce_zero_label), "orientation": int(s.orientation),
            "mask_orientation": int(s.mask_orientation)}


def read(path: Path) -> Listed:
    data = json.loads(Path(path).read_text())
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: input list version {data.get('version')}, featvis reads {VERSION}")
    samples = [inputs.Sample(stem=str(s["stem"]), image_path=Path(s["image"]),
                             mask_path=None if s["mask"] is None else Path(s["mask"]),
                             size=(int(s["size"][0]), int(s["size"][1])),
                             label_map=None if s["label_map"] is None else {int(k): int(v) for k, v in s["label_map"]},
                             reduce_zero_label=bool(s["reduce_zero_label"]), orientation=int(s["orientation"]),
                             mask_orientation=int(s["mask_orientation"])) for s in data["samples"]]
    problems = [inputs.Problem(Path(p["path"]), str(p["message"])) for p in data["problems"]]
    return samples, problems
