"""Weights & Biases, offline unless an API key is configured; never prompts, never hangs.

Differences from MMEngine's WandbVisBackend, each a fix for featvis's use:
- the mode is passed to `wandb.init` explicitly (`WANDB_*` variables are read once per
  process): `auto` means online with an API key, offline without one;
- the run lives in a worker process (featvis.backends.wandb_worker), started when the
  backend is built and reused by the process's next job: wandb's Python work (its import,
  `wandb.init`, one `wandb.Image` per picture, `finish`) never holds the job's GIL, and
  the job never waits for the run to open: each image's pictures are written to files
  and its row is sent at once, logged in order and at its step as soon as the run is open;
- every run is finished in `close()`, so each job of a multirun gets its own run
  (under Hydra's basic launcher all jobs share a process, and a second `wandb.init`
  while a run is open would return the old run);
- `step` is honoured and all panels of one image go into one `log` call, one history
  row per image; images carry captions;
- the run is named, grouped and configured from the Hydra job (see featvis.config.job);
- pictures are encoded by featvis.backends.encoding (OpenCV's JPEG, zlib-ng's PNG; much
  faster than wandb's own PIL encoding), once for every backend that wants the same
  format, and handed to `wandb.Image` as files: JPEG at quality 90, at most 1024 pixels on the longer
  side by default (`wandb.image_format`, `wandb.quality`, `wandb.max_side`), since W&B's
  panels are a few hundred pixels wide; `wandb.image_format=png wandb.max_side=null` logs
  the full-size lossless pictures;
- the `input` picture carries the prediction and the ground truth as interactive masks
  (the panel's `labels`, featvis.render.panel.LabelMaps; label 255, mmseg's ignore
  index, is called "ignore"), shrunk with the picture (nearest label);
- a failed job's run is finished with exit code 1 (`close(failed=True)`), keeping what it logged;
- at close, a `featvis/table` W&B Table (one row per image: its id, the input with masks,
  every layer's map and its `stats`) goes into the run's summary, not its history, so
  the history keeps one row per image. It reuses the wandb.Image objects already logged;
- a worker that dies (killed, out of memory) stops the job at its next picture, with the
  pictures of the images already logged complete in the other backends (`check`);
- wandb's own files (its service's log, staged artifact files, temporaries) go to the job's
  `.wandb-internal/` folder (`files_dir_for`), not to the home folder or /tmp.

`experiment` (MMEngine's handle on the run) is None: the run is in the worker process.
"""

from __future__ import annotations

import logging
import netrc
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import urlparse

import cv2
import numpy as np
from mmengine.registry import VISBACKENDS

from featvis.backends.base import FeatvisBackend, RunInfo
from featvis.backends.encoding import Encoded, PictureFormat, write_picture
from featvis.backends.wandb_pool import acquire, prewarm, release
from featvis.backends.wandb_run import RunSpec
from featvis.backends.wandb_worker import WandbProcess
from featvis.errors import ConfigError
from featvis.render.labels import IGNORE_INDEX  # mmseg's ignore label in ground-truth masks
from featvis.render.panel import Panel

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"
WANDB_FORMATS = ("jpeg", "png")  # what wandb.Image takes from a file and its UI shows
FILES_DIR = ".wandb-internal"  # wandb's own files, in the job's folder (files_dir_for)
STAGING_SUFFIX = ".partial"  # a job's results folder until it completes, then renamed (featvis.pipeline.job)


def files_dir_for(save_dir: Union[str, Path]) -> Path:
    """The folder for wandb's own files of a run saved in `save_dir` (what featvis.backends.wandb_worker's
    `WandbFiles` puts there): `.wandb-internal/` in the job's folder.

    Beside the job's `featvis.partial/`, not in it: that folder is renamed `featvis/` when the job
    completes, and an offline run names its staged artifact files (its `featvis/table`) by absolute
    path until `wandb sync` uploads them. A `save_dir` of another name holds it itself.
    """
    save_dir = Path(save_dir).absolute()
    return (save_dir.parent if save_dir.suffix == STAGING_SUFFIX else save_dir) / FILES_DIR


def api_key_configured() -> bool:
    """True when wandb would find an API key: WANDB_API_KEY or a ~/.netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """`auto` -> WANDB_MODE if the user set it, else online with an API key, offline without."""
    if mode == "auto":
        env = os.environ.get("WANDB_MODE")
        if env in ("online", "offline", "disabled"):
            return env
        return "online" if api_key_configured() else "offline"
    if mode == "online" and not api_key_configured():
        raise ConfigError("wandb.mode=online but no W&B API key is configured: run `wandb login`, "
                          "set WANDB_API_KEY, or use wandb.mode=offline")
    return mode


@VISBACKENDS.register_module()
class FeatvisWandbVisBackend(FeatvisBackend):
    def __init__(self, save_dir: str, run_info: Optional[RunInfo] = None, project: str = "featvis",
                 entity: Optional[str] = None, mode: str = "auto", group: Optional[str] = None,
                 init_timeout: float = 30.0, image_format: str = "jpeg", quality: int = 90,
                 max_side: Optional[int] = 1024) -> None:
        if image_format not in WANDB_FORMATS:
            raise ConfigError(f"image_format={image_format!r}: W&B shows {' or '.join(WANDB_FORMATS)} "
                              "pictures; use one of those")
        # absolute: the worker process works in another folder (featvis.backends.wandb_worker.WandbFiles)
        super().__init__(str(Path(save_dir).absolute()), run_info, PictureFormat(image_format, quality, max_side))
        self.project, self.entity, self.group = project, entity, group or self.run_info.group
        self.mode = resolve_mode(mode)  # fails here, before any work, on online without a key
        self.init_timeout = init_timeout
        self._worker: Optional[WandbProcess] = None  # the process that holds the run, once started
        self._opening: Optional[int] = None  # its open command, answered when the run is open
        self._pending: Dict[str, Any] = {}
        self._pending_step: Optional[int] = None
        self._encoded: Optional[Path] = None  # where pictures are written for the run: made on first use
        self._n_encoded = 0
        self._rows: Dict[str, Dict[str, Any]] = {}  # image id -> {table column: value}, in logging order
        prewarm()  # the worker imports wandb while the job loads its model

    @classmethod
    def save_dir_for(cls, job_dir: Path, key: str) -> Path:
        """The job's folder itself: wandb makes its own `wandb/` folder in it."""
        return Path(job_dir)

    @property
    def experiment(self) -> Any:
        """None: the run lives in featvis's W&B worker process (featvis.backends.wandb_worker)."""
        return None

    def start(self) -> None:
        """Open the run in the worker process; the job goes on at once (rows wait in the pipe)."""
        if self._worker is not None:
            return
        Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        spec = RunSpec(save_dir=str(self._save_dir), project=self.project, entity=self.entity, group=self.group,
                       job_type=self.run_info.job_type, name=self.run_info.name, config=self.run_info.config,
                       init_timeout=self.init_timeout)
        self._worker = acquire()
        files = files_dir_for(self._save_dir)
        self._worker.opens(files)
        self._opening = self._worker.send("open", spec=asdict(spec), mode=self.mode, files=str(files))

    def _init_env(self) -> None:
        """MMEngine's hook: open the run and wait until it is."""
        self.start()
        self._check_open(wait=True)

    def _check_open(self, wait: bool) -> None:
        """Raise the opening's error in the job's thread once the worker answered (or now: `wait`)."""
        if self._worker is None or self._opening is None:
            return
        if wait or self._worker.answered(self._opening):
            opening, self._opening = self._opening, None
            self.mode = self._worker.wait(opening).get("mode", self.mode)  # offline when online failed

    def _media_dir(self) -> Path:
        if self._encoded is None:
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
            self._encoded = Path(tempfile.mkdtemp(prefix=".featvis-png-", dir=self._save_dir))
        return self._encoded

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Nothing to add: the resolved config went to `wandb.init` with the run (`RunInfo.config`)."""

    def add_panel(self, panel: Panel, step: int, image_id: str, encoded: Encoded) -> None:
        self._check_worker()  # a dead worker fails the job here, at its next picture
        fmt = self.picture_format
        self._n_encoded += 1
        path = self._media_dir() / f"{self._n_encoded}{fmt.suffix}"
        write_picture(path, panel.picture, encoded, fmt)
        picture: Dict[str, Any] = {"picture": str(path), "caption": panel.caption}
        labels = panel.labels
        if labels is not None:  # label maps at the picture's stored size: nearest label, no blending
            gt = labels.ground_truth
            masks = _masks(_shrink_labels(fmt, labels.prediction), None if gt is None else _shrink_labels(fmt, gt),
                           labels.class_names)
            picture["masks"] = {name: self._mask_file(path, name, mask) for name, mask in masks.items()}
        self._stage(panel.name, picture, step)
        if panel.name == "input" or panel.layer is not None:
            row = self._rows.setdefault(image_id, {})
            if panel.layer is None:
                row["input"] = {"picture": str(path)}  # the worker reuses the logged wandb.Image
            else:
                row[f"featmap/{panel.layer}"] = {"picture": str(path)}
                for key, value in (panel.stats or {}).items():
                    row[f"stats/{panel.layer}/{key}"] = value

    @staticmethod
    def _mask_file(picture: Path, name: str, mask: Dict[str, Any]) -> Dict[str, Any]:
        """A mask as the worker reads it: its uint8 labels in a .npy file (no pickle), its class names."""
        file = picture.with_name(f"{picture.stem}.{name}.npy")
        np.save(file, mask["mask_data"], allow_pickle=False)
        return {"file": str(file), "class_labels": [[int(v), n] for v, n in mask["class_labels"].items()]}

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self._check_worker()
        self._stage(name, value, step)

    def add_scalars(self, scalar_dict: dict, step: int = 0, **kwargs: Any) -> None:
        self._check_worker()
        for name, value in scalar_dict.items():
            self._stage(name, value, step)

    def _check_worker(self) -> None:
        """Raise a failed logging command's error, or the worker's death, now (no wait: featvis.backends.
        wandb_worker's `check`); the visualizer gives this backend an image's pictures after the
        backends that write files have written them all, so those stay complete."""
        if self._worker is not None:
            self._worker.check()

    def _stage(self, name: str, value: Any, step: int) -> None:
        """Collect one step's values, so each image becomes one `log` call and one history row."""
        if self._pending_step is not None and step != self._pending_step:
            self._flush()
        self._pending_step = step
        self._pending[name] = value

    def _flush(self) -> None:
        """The staged row to the worker, which logs it once the run is open."""
        if self._pending:
            self.start()  # MMEngine's add_image without featvis's start(): open now
            self._worker.send("log", step=self._pending_step, row=self._pending)
            self._check_open(wait=False)
            self._worker.check()
        self._pending, self._pending_step = {}, None

    def close(self, failed: bool = False) -> None:
        try:
            if self._worker is None and not self._pending:
                return  # never started, nothing logged
            self._flush()  # a failed job keeps what it logged, and is marked failed below
            worker = self._worker
            self._log_table()
            finished = worker.send("finish", exit_code=1 if failed else 0)
            self._worker, self._rows = None, {}
            self._check_open(wait=True)  # the opening's error, if it failed, is raised here
            worker.wait(finished)
            worker.raise_errors()
            release(worker)  # the next job of this process reuses it
            log.info("W&B run %s finished (%s)", self.run_info.name, self.mode)
        finally:
            if self._encoded is not None:
                shutil.rmtree(self._encoded, ignore_errors=True)
                self._encoded = None

    def _log_table(self) -> None:
        """The run's `featvis/table`: one row per image, columns in order of first appearance."""
        if not self._rows:
            return
        columns: List[str] = ["image_id"]
        for row in self._rows.values():
            columns.extend(c for c in row if c not in columns)
        data = [[image_id, *(row.get(c) for c in columns[1:])] for image_id, row in self._rows.items()]
        self._worker.send("table", columns=columns, data=data)


def _shrink_labels(fmt: PictureFormat, labels: np.ndarray) -> np.ndarray:
    """A label map at the size `fmt` stores its picture (nearest neighbour: labels stay labels)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or fmt.size(*labels.shape) == labels.shape:
        return labels
    if labels.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.float32):
        labels = labels.astype(np.int32)
    return fmt.shrink(labels, cv2.INTER_NEAREST)


def _masks(pred: Optional[np.ndarray], gt: Optional[np.ndarray],
           class_names: Optional[Sequence[str]]) -> Dict[str, Dict[str, Any]]:
    """wandb.Image masks: {"prediction"|"ground_truth": {"mask_data", "class_labels"}} (uint8 label maps).

    Every value present gets a label: the class name, "ignore" for 255, or "class <v>" for
    a value beyond the class list. A map holding values outside 0..255 is left out (logged).
    """
    out: Dict[str, Dict[str, Any]] = {}
    names = list(class_names or [])
    for key, labels in (("prediction", pred), ("ground_truth", gt)):
        if labels is None:
            continue
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.size == 0:
            continue
        if labels.min() < 0 or labels.max() > 255:
            log.warning("W&B %s mask left out: labels outside 0..255", key)
            continue
        data = labels.astype(np.uint8)  # also keeps what the run holds until close small
        class_labels = {i: name for i, name in enumerate(names[:256])}
        for value in np.unique(data).tolist():
            if value not in class_labels:
                class_labels[value] = "ignore" if value == IGNORE_INDEX else f"class {value}"
        out[key] = {"mask_data": data, "class_labels": class_labels}
    return out
