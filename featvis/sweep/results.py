"""The per-job result record of a sweep: `JobRecord`, written to `<job dir>/featvis_result.json` and read back.

Every multirun job, ok or failed, writes one (featvis.cli, through `write_job_result`):
its overrides, name, status, error line, the images and panels it drew, and where each
panel's picture file is (`panel_files`, relative to the job dir, as the local backend
lays them out: featvis.backends.local.panel_file). A job that ran without
`backends=[local]` has `panel_files: null`: it has no pictures a summary could show.
The summary (featvis.sweep.summary) reads the records back with `load_results`, and
reads pictures only through `JobRecord.picture`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from hydra.core.hydra_config import HydraConfig
from mmengine.registry import VISBACKENDS

from featvis.backends.encoding import FORMATS, SUFFIXES
from featvis.backends.local import FeatvisLocalVisBackend, panel_file
from featvis.backends.visualizer import save_dir as backend_save_dir
from featvis.data.paths import config_stem
from featvis.engine.result import RESULTS_DIR, JobResult
from featvis.errors import FittedOnlyError, SkippedImagesError
from featvis.io import write_atomic
from featvis.sweep import manifest

log = logging.getLogger(__name__)

RESULT_FILE = "featvis_result.json"
SUMMARY = "summary"  # the summary's folder in the sweep dir: no job's
NO_PICTURES = "no pictures: the job ran without backends=[local]"

PanelFiles = Dict[str, Dict[str, str]]  # image stem -> panel name -> picture file, relative to the job dir
T = TypeVar("T")


@dataclass
class WandbSettings:
    """The job's W&B settings (the top-level `wandb` config key), for the sweep's summary run."""

    project: Optional[str] = "featvis"
    entity: Optional[str] = None
    mode: Optional[str] = "auto"
    group: Optional[str] = None
    init_timeout: float = 30.0

    def to_json(self) -> Dict[str, Any]:
        return {"project": self.project, "entity": self.entity, "mode": self.mode, "group": self.group,
                "init_timeout": self.init_timeout}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "WandbSettings":
        return cls(project=data.get("project"), entity=data.get("entity"), mode=data.get("mode"),
                   group=data.get("group"), init_timeout=float(data.get("init_timeout") or 30.0))


@dataclass
class JobRecord:
    """One job of a sweep, as its result file tells it; `dir` is the job's folder (where that file is)."""

    dir: Path
    name: str
    status: str  # ok | failed | skipped-images | interrupted | fitted (featvis.pipeline.fits)
    num: Optional[int] = None  # Hydra's job number
    overrides: List[str] = field(default_factory=list)
    job_type: str = "default"
    error: Optional[str] = None  # the one-line error of a failed job
    exit_code: int = 0
    images: List[str] = field(default_factory=list)  # stems, in drawing order
    panels: Dict[str, List[str]] = field(default_factory=dict)  # stem -> panel names
    panel_files: Optional[PanelFiles] = None  # None: the job ran without the local backend
    forwards: Optional[int] = None  # images the model ran on in this job
    reused: Optional[int] = None  # images taken from an earlier job's forward (share_forward)
    weights: Optional[str] = None  # model.strict=false and the checkpoint did not fit: "partly random weights: ..."
    labels: Dict[str, str] = field(default_factory=dict)  # image -> its mask's values that are not classes
    model: Optional[str] = None
    checkpoint: Optional[str] = None  # the checkpoint's file name
    layers: Optional[str] = None  # the layer preset, or the layer names given (layers.names)
    reduction: Optional[str] = None
    backends: List[str] = field(default_factory=list)
    wandb: Optional[WandbSettings] = None
    sweep_id: Optional[str] = None  # the sweep's manifest id (featvis.sweep.manifest): whose job this is
    shard: Optional[int] = None  # which shard of its job's images this job drew (featvis.sweep.shards)
    shards: int = 1  # how many shards its job's images were split into
    parts: List[Path] = field(default_factory=list)  # a job merged from its shards: their folders, in shard order

    @property
    def folders(self) -> List[Path]:
        """The folders holding the job's results: its shards', or its own."""
        return list(self.parts) or [self.dir]

    def to_json(self) -> Dict[str, Any]:
        """The result file's keys (`job_dir` is the folder the job wrote it in)."""
        return {
            "job_dir": str(self.dir), "num": self.num, "overrides": list(self.overrides), "name": self.name,
            "job_type": self.job_type, "status": self.status, "error": self.error, "exit_code": self.exit_code,
            "images": list(self.images), "panels": {k: list(v) for k, v in self.panels.items()},
            "panel_files": self.panel_files, "forwards": self.forwards, "reused": self.reused,
            "weights": self.weights, "labels": dict(self.labels),
            "model": self.model, "checkpoint": self.checkpoint, "layers": self.layers,
            "reduction": self.reduction, "backends": list(self.backends),
            "wandb": None if self.wandb is None else self.wandb.to_json(), "sweep_id": self.sweep_id,
            "shard": self.shard, "shards": self.shards,
            **({"parts": [str(p) for p in self.parts]} if self.parts else {}),
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any], job_dir: Path) -> "JobRecord":
        """The record of a result file found in `job_dir` (the sweep may have moved since it was written)."""
        backends = list(data.get("backends") or [])
        panels = {k: list(v) for k, v in (data.get("panels") or {}).items()}
        if "panel_files" in data:
            files = data["panel_files"]
        elif "local" in backends:  # written before featvis named the files: the local backend's default folder
            root = FeatvisLocalVisBackend.save_dir_for(Path(job_dir) / RESULTS_DIR, "local")
            files = _panel_files(root, Path(job_dir), panels)
        else:
            files = None
        wandb = data.get("wandb")
        return cls(
            dir=Path(job_dir), name=str(data["name"]), status=str(data["status"]), num=data.get("num"),
            overrides=list(data.get("overrides") or []), job_type=data.get("job_type") or "default",
            error=data.get("error"), exit_code=int(data.get("exit_code") or 0),
            images=list(data.get("images") or []), panels=panels, panel_files=files,
            forwards=data.get("forwards"), reused=data.get("reused"), weights=data.get("weights"),
            labels=dict(data.get("labels") or {}),
            model=data.get("model"),
            checkpoint=data.get("checkpoint"), layers=data.get("layers"), reduction=data.get("reduction"),
            backends=backends, wandb=WandbSettings.from_json(wandb) if isinstance(wandb, dict) else None,
            sweep_id=data.get("sweep_id"), shard=data.get("shard"), shards=int(data.get("shards") or 1),
        )

    @property
    def has_pictures(self) -> bool:
        """Whether the job's pictures were written where a summary can read them (backends=[local])."""
        return self.panel_files is not None

    def row_panels(self, stem: str) -> List[str]:
        """The job's panels for one image, in contact-sheet order: input, prediction, then its feature maps."""
        panels = self.panels.get(stem, [])
        first = [p for p in ("input", "prediction") if p in panels]
        return first + [p for p in panels if p.startswith("featmap/")]

    def picture(self, stem: str, panel: str) -> Optional[Path]:
        """The picture file of one panel of one image, as the result file names it; None: not written."""
        name = (self.panel_files or {}).get(stem, {}).get(panel)
        return None if name is None else self.dir / name


def write_job_result(cfg: Any, info: Any, result: Optional[JobResult], error: Optional[BaseException],
                     error_line: Optional[str]) -> Path:
    """Write `<job dir>/featvis_result.json` atomically, for the job that ends now (ok or failed)."""
    record = job_record(cfg, info, result, error, error_line)
    return write_atomic(record.dir / RESULT_FILE, json.dumps(record.to_json(), indent=2))


def job_record(cfg: Any, info: Any, result: Optional[JobResult], error: Optional[BaseException],
               error_line: Optional[str]) -> JobRecord:
    """The record of a job from its config, its featvis.config.job.JobInfo, and what it returned or raised."""
    if error is None:
        status = "ok"
    elif isinstance(error, SkippedImagesError):
        status = "skipped-images"
    elif isinstance(error, FittedOnlyError):  # a shard's part of the scale, nothing drawn yet: launch again
        status = "fitted"
    elif isinstance(error, KeyboardInterrupt):  # Ctrl-C, SIGTERM, SIGHUP: stopped, not broken
        status = "interrupted"
    else:
        status = "failed"
    out = Path(info.output_dir)
    local = _safe(lambda: local_root(cfg, out))
    if result is not None:
        images, panels = list(result.images), {k: list(v) for k, v in result.panels.items()}
    else:  # failed, or finished with images skipped: what the local backend left, if anything
        images, panels = _scan_panels(local) if local is not None else ([], {})
    wandb = _safe(lambda: WandbSettings(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=cfg.wandb.mode,
                                        group=cfg.wandb.group or info.group,
                                        init_timeout=float(cfg.wandb.init_timeout)))
    return JobRecord(
        dir=out, num=_safe(lambda: int(HydraConfig.get().job.num)), overrides=list(info.overrides),
        name=info.name, job_type=info.job_type, status=status, error=error_line,
        exit_code=0 if error is None else getattr(error, "exit_code", 1), images=images, panels=panels,
        panel_files=None if local is None else _panel_files(local, out, panels, _local_suffix(cfg)),
        forwards=getattr(result, "forwards", None), reused=getattr(result, "reused", None),
        weights=getattr(result, "weights", None), labels=dict(getattr(result, "labels", None) or {}),
        model=_safe(lambda: cfg.model.name or config_stem(cfg.model.config)) or info.choices.get("model"),
        checkpoint=_safe(lambda: _basename(cfg.model.checkpoint)),
        layers=_safe(lambda: ", ".join(cfg.layers.names) if cfg.layers.names is not None else cfg.layers.preset)
        or info.choices.get("layers"),  # what ran: the names given, else the preset
        reduction=_safe(lambda: str(cfg.reduction.name)) or info.choices.get("reduction"),
        backends=_safe(lambda: sorted(cfg.backends.keys())) or [], wandb=wandb,
        sweep_id=_safe(lambda: manifest.read(info.sweep_dir).id) if info.sweep_dir is not None else None,
        shard=_safe(lambda: cfg.shard), shards=_safe(lambda: int(cfg.shards)) or 1,
    )


def local_root(cfg: Any, job_dir: Path) -> Optional[Path]:
    """The folder the job's local backend (FeatvisLocalVisBackend) wrote its pictures to; None without one.

    Its `kwargs.save_dir` (inside the job's results) if set, else the backend's own folder
    there, as featvis.backends.visualizer builds it.
    """
    found = _local_backend(cfg)
    if found is None:
        return None
    key, cls, kwargs = found
    return backend_save_dir(cls, key, kwargs, Path(job_dir) / RESULTS_DIR)


def _local_suffix(cfg: Any) -> str:
    """The file suffix of the local backend's pictures (its `image_format` kwarg; .png by default)."""
    found = _local_backend(cfg)
    return FORMATS.get((found[2] if found else {}).get("image_format") or "png", ".png")


def _local_backend(cfg: Any) -> Optional[Tuple[str, type, Dict[str, Any]]]:
    """(key, class, kwargs) of the job's local backend (FeatvisLocalVisBackend or a subclass); None without one."""
    for key, spec in (cfg.backends or {}).items():
        cls = VISBACKENDS.get(spec.get("type"))
        if isinstance(cls, type) and issubclass(cls, FeatvisLocalVisBackend):
            return str(key), cls, dict(spec.get("kwargs") or {})
    return None


def _panel_files(root: Path, job_dir: Path, panels: Dict[str, List[str]], suffix: str = ".png") -> PanelFiles:
    files: PanelFiles = {}
    for stem, names in panels.items():
        files[stem] = {}
        for panel in names:
            path = panel_file(root, stem, panel, suffix)
            try:
                files[stem][panel] = str(path.relative_to(job_dir))
            except ValueError:  # a save_dir outside the job's folder
                files[stem][panel] = str(path)
    return files


def _scan_panels(local: Path) -> Tuple[List[str], Dict[str, List[str]]]:
    """(stems, {stem: panel names}) of the pictures a local backend folder holds."""
    images: List[str] = []
    panels: Dict[str, List[str]] = {}
    if local.is_dir():
        for folder in sorted(p for p in local.iterdir() if p.is_dir()):
            names = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*")
                           if p.suffix in SUFFIXES)
            if names:
                images.append(folder.name)
                panels[folder.name] = names
    return images, panels


def _safe(fn: Callable[[], T]) -> Optional[T]:
    """fn(), or None when it fails: a result file is written even for a job whose config is broken."""
    try:
        return fn()
    except Exception:
        return None


def _basename(value: Any) -> Optional[str]:
    return None if value is None else os.path.basename(str(value).rstrip("/")) or str(value)


def load_results(sweep_dir: Path) -> List[JobRecord]:
    """The record of every job this sweep started (featvis.sweep.manifest), in job order.

    Only the folders the sweep's jobs registered are read, and only records of this sweep
    (its manifest's id): never a search below the folder.
    """
    sweep_dir = Path(sweep_dir)
    this = manifest.read(sweep_dir)
    records = []
    for num, folder in manifest.job_dirs(sweep_dir):
        path = folder / RESULT_FILE
        try:
            record = JobRecord.from_json(json.loads(path.read_text()), folder)
        except FileNotFoundError:
            continue  # running, or stopped before it wrote its record
        except (OSError, ValueError, KeyError, TypeError) as err:  # being written by a job that has not finished
            log.debug("%s not read: %s", path, err)
            continue
        if this is not None and record.sweep_id != this.id:
            log.warning("%s belongs to another sweep, not read", path)
            continue
        if record.num is None:
            record.num = num
        records.append(record)

    def order(r: JobRecord) -> tuple:
        return (0, r.num, "") if isinstance(r.num, int) else (1, 0, str(r.dir))

    return sorted(records, key=order)
