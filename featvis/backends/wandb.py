"""Weights & Biases, offline unless an API key is configured; never prompts, never hangs.

Differences from MMEngine's WandbVisBackend, each a fix for featvis's use:
- the mode is passed to `wandb.init` explicitly (`WANDB_*` variables are read once per
  process): `auto` means online with an API key, offline without one;
- the run opens in a background thread and the job never waits for it: until it is
  open, each image's pictures are written to files and its history row is held (at most
  `BACKLOG` rows; then the job waits), and logged, in order and at their steps, as soon
  as it is (W&B's service takes seconds to start, a fast model's dozens of images);
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
  the history keeps one row per image. It reuses the wandb.Image objects already logged.
"""

from __future__ import annotations

import logging
import netrc
import os
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import cv2
import numpy as np
from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import force_init_env

from featvis.backends.base import FeatvisBackend, RunInfo
from featvis.backends.encoding import Encoded, PictureFormat, write_picture
from featvis.backends.wandb_run import RunSpec, open_run
from featvis.errors import ConfigError
from featvis.render.labels import IGNORE_INDEX  # mmseg's ignore label in ground-truth masks
from featvis.render.panel import Panel

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"
WANDB_FORMATS = ("jpeg", "png")  # what wandb.Image takes from a file and its UI shows
BACKLOG = 64  # history rows held while the run opens; one more and the job waits for it


@dataclass(eq=False)
class _Picture:
    """A picture written for the run, made a wandb.Image when the run is open (and then kept)."""

    path: Path
    caption: str
    masks: Optional[Dict[str, Any]]
    image: Any = None

    def wandb_image(self) -> Any:
        if self.image is None:
            self.image = _wandb().Image(str(self.path), caption=self.caption, masks=self.masks)
        return self.image


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
        super().__init__(save_dir, run_info, PictureFormat(image_format, quality, max_side))
        self.project, self.entity, self.group = project, entity, group or self.run_info.group
        self.mode = resolve_mode(mode)  # fails here, before any work, on online without a key
        self.init_timeout = init_timeout
        self._run: Any = None
        self._pending: Dict[str, Any] = {}
        self._pending_step: Optional[int] = None
        self._backlog: "deque[Tuple[int, Dict[str, Any]]]" = deque()  # (step, row) waiting for the run
        self._encoded: Optional[Path] = None  # where pictures are written for the run: made on first use
        self._n_encoded = 0
        self._starter: Optional[threading.Thread] = None
        self._start_error: Optional[BaseException] = None
        self._rows: Dict[str, Dict[str, Any]] = {}  # image id -> {table column: value}, in logging order

    @classmethod
    def save_dir_for(cls, job_dir: Path, key: str) -> Path:
        """The job's folder itself: wandb makes its own `wandb/` folder in it."""
        return Path(job_dir)

    @property  # type: ignore[misc]
    @force_init_env
    def experiment(self) -> Any:
        return self._run

    def start(self) -> None:
        """Open the run in a background thread (importing wandb and starting its service
        take about a second), so that it overlaps the model's first forward pass."""
        def open_in_background() -> None:
            try:
                self._open()
            except BaseException as err:  # re-raised in the job's thread by _ready
                self._start_error = err

        self._starter = threading.Thread(target=open_in_background, name="featvis-wandb-init", daemon=True)
        self._starter.start()

    def _init_env(self) -> None:
        self._ready(wait=True)

    def _ready(self, wait: bool) -> bool:
        """Whether the run is open; `wait`: open it, or wait for the background opening, first.
        An error of the background opening is raised here, in the job's thread."""
        if self._run is not None:
            return True
        if self._starter is not None:
            if not wait and self._starter.is_alive():
                return False
            self._starter.join()
            self._starter = None
            if self._start_error is not None:
                raise self._start_error
        if self._run is None:
            self._open()
        return True

    def _open(self) -> None:
        Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        self._run = self._init(self.mode)

    def _media_dir(self) -> Path:
        if self._encoded is None:
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
            self._encoded = Path(tempfile.mkdtemp(prefix=".featvis-png-", dir=self._save_dir))
        return self._encoded

    def _init(self, mode: str) -> Any:
        spec = RunSpec(save_dir=self._save_dir, project=self.project, entity=self.entity, group=self.group,
                       job_type=self.run_info.job_type, name=self.run_info.name, config=self.run_info.config,
                       init_timeout=self.init_timeout)
        run, self.mode = open_run(spec, mode)  # offline when online fails: never lose the job
        return run

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Nothing to add: the resolved config went to `wandb.init` with the run (`RunInfo.config`)."""

    def add_panel(self, panel: Panel, step: int, image_id: str, encoded: Encoded) -> None:
        fmt = self.picture_format
        self._n_encoded += 1
        path = self._media_dir() / f"{self._n_encoded}{fmt.suffix}"
        write_picture(path, panel.picture, encoded, fmt)
        labels = panel.labels
        masks = {}
        if labels is not None:  # label maps at the picture's stored size: nearest label, no blending
            gt = labels.ground_truth
            masks = _masks(_shrink_labels(fmt, labels.prediction), None if gt is None else _shrink_labels(fmt, gt),
                           labels.class_names)
        picture = _Picture(path, panel.caption, masks or None)
        self._stage(panel.name, picture, step)
        if panel.name == "input" or panel.layer is not None:
            row = self._rows.setdefault(image_id, {})
            if panel.layer is None:
                row["input"] = picture
            else:
                row[f"featmap/{panel.layer}"] = picture
                for key, value in (panel.stats or {}).items():
                    row[f"stats/{panel.layer}/{key}"] = value

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self._stage(name, value, step)

    def add_scalars(self, scalar_dict: dict, step: int = 0, **kwargs: Any) -> None:
        for name, value in scalar_dict.items():
            self._stage(name, value, step)

    def _stage(self, name: str, value: Any, step: int) -> None:
        """Collect one step's values, so each image becomes one `log` call and one history row."""
        if self._pending_step is not None and step != self._pending_step:
            self._flush()
        self._pending_step = step
        self._pending[name] = value

    def _flush(self, wait: bool = False) -> None:
        """The staged row joins the backlog; the backlog is logged if the run is open (or `wait`,
        or the backlog is full: then the job waits for the run)."""
        if self._pending:
            self._backlog.append((self._pending_step, self._pending))
        self._pending, self._pending_step = {}, None
        if not self._backlog or not self._ready(wait=wait or len(self._backlog) > BACKLOG):
            return
        while self._backlog:
            step, row = self._backlog.popleft()
            self._run.log({k: _value(v) for k, v in row.items()}, step=step)

    def close(self, failed: bool = False) -> None:
        try:
            if self._run is None and self._starter is None and not self._pending and not self._backlog:
                return  # never started, nothing logged
            self._ready(wait=True)  # the opening ends before the job does; its error is raised here
            try:
                self._flush(wait=True)  # a failed job keeps what it logged, and is marked failed below
                self._log_table()
            finally:
                self._run.finish(exit_code=1 if failed else 0)  # copies the logged media
                self._run = None
                self._rows = {}
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
        data = [[image_id, *(_value(row.get(c)) for c in columns[1:])] for image_id, row in self._rows.items()]
        # in the summary, not the history: the history keeps exactly one row per image
        self._run.summary["featvis/table"] = _wandb().Table(columns=columns, data=data, allow_mixed_types=True)


def _value(value: Any) -> Any:
    return value.wandb_image() if isinstance(value, _Picture) else value


def _shrink_labels(fmt: PictureFormat, labels: np.ndarray) -> np.ndarray:
    """A label map at the size `fmt` stores its picture (nearest neighbour: labels stay labels)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or fmt.size(*labels.shape) == labels.shape:
        return labels
    if labels.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.float32):
        labels = labels.astype(np.int32)
    return fmt.shrink(labels, cv2.INTER_NEAREST)


def _wandb() -> ModuleType:
    """The wandb module, imported by the run's first use of it (open_run imports it first)."""
    import wandb  # noqa: PLC0415  (about a second to import: only jobs that log to W&B pay it)

    return wandb


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
