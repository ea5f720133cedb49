"""One job's visualizer: the backends of the `backends` config group, built fresh per job, and the fan-out to them.

MMEngine's `Visualizer` is a process-wide singleton, and the jobs of a Hydra multirun
under the basic launcher share one process, so featvis does not use it: each job
builds its own backends from MMEngine's VISBACKENDS registry and closes them when it
ends, telling them whether the job failed (W&B marks its run failed). featvis's backends
implement featvis.backends.base.FeatvisBackend; MMEngine's own are wrapped in
featvis.backends.adapter.MMEngineBackend, so every backend is driven alike.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Set
from urllib.parse import urlparse

import mmengine.visualization  # noqa: F401  (registers MMEngine's backends)
from mmengine.config import Config
from mmengine.registry import VISBACKENDS

import featvis.backends.local  # noqa: F401  (registers featvis's backends)
import featvis.backends.wandb  # noqa: F401
from featvis.backends.adapter import MMEngineBackend
from featvis.backends.base import FeatvisBackend, RunInfo
from featvis.backends.encoding import Encoded, PictureFormat, in_parallel
from featvis.errors import BackendError, ConfigError, FeatvisError
from featvis.render.panel import Panel


def known_backend_types() -> Set[str]:
    return set(VISBACKENDS.module_dict)


def picture_formats(backends: Iterable[FeatvisBackend]) -> List[PictureFormat]:
    """The picture formats these backends store, each once (backends that want the same share it)."""
    wanted = (b.picture_format for b in backends)
    return list({fmt.key: fmt for fmt in wanted if fmt is not None}.values())


# kwargs of MMEngine's backends (and the libraries behind them) that name where they write:
# joined onto save_dir by MMEngine's LocalVisBackend, or read by the library against the working folder
JOINED_PATHS = frozenset({"img_save_dir", "config_save_file", "scalar_save_file"})
OWN_PATHS = frozenset({"dir", "repo", "logdir", "log_dir", "output_dir", "root_dir", "work_dir", "tracking_uri"})


def save_dir(cls: type, key: str, kwargs: Mapping[str, Any], job_dir: Path) -> Path:
    """Where backend `key` (class `cls`) writes in the job's results folder `job_dir`.

    Its `save_dir` kwarg, relative to `job_dir` (never outside it: a shared preset must not
    make a job write elsewhere), else the backend's own default.
    """
    given = kwargs.get("save_dir")
    if given is None:
        return cls.save_dir_for(job_dir, key) if issubclass(cls, FeatvisBackend) else job_dir / key
    return _inside(f"backends.{key}.kwargs.save_dir", given, job_dir)


def _inside(name: str, value: Any, root: Path) -> Path:
    """`root / value` when `value` is a relative path that stays inside `root`; ConfigError otherwise."""
    text = str(value)
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    if path.is_absolute() or os.path.normpath(path).split(os.sep)[0] == "..":
        raise ConfigError(f"{name}={text!r} is outside the job's output folder: featvis writes only inside it; "
                          "give a folder relative to the job's results, or move the whole output with "
                          "hydra.run.dir (hydra.sweep.dir for a sweep)")
    return root / path


def _confine(name: str, kwargs: Dict[str, Any], root: Path) -> Dict[str, Any]:
    """`kwargs` with every path they name kept inside `root`, the backend's folder (nested dicts too:
    `init_kwargs.dir`); URLs of servers stay as they are."""
    out: Dict[str, Any] = {}
    for key, value in kwargs.items():
        where = f"{name}.{key}"
        if isinstance(value, Mapping):
            out[key] = _confine(where, dict(value), root)
        elif key in JOINED_PATHS and value is not None:
            _inside(where, value, root)
            out[key] = value
        elif key in OWN_PATHS and isinstance(value, str) and urlparse(value).scheme in ("", "file"):
            out[key] = str(_inside(where, value, root))
        else:
            out[key] = value
    return out


def build_backend(key: str, spec: Mapping[str, Any], job_dir: Path, run_info: RunInfo) -> FeatvisBackend:
    """Backend `key` of the `backends` group: `spec` is {type, kwargs}; save_dir defaults per backend."""
    cls = VISBACKENDS.get(spec["type"])
    kwargs = dict(spec.get("kwargs") or {})
    folder = save_dir(cls, key, kwargs, job_dir)
    kwargs = _confine(f"backends.{key}.kwargs", {k: v for k, v in kwargs.items() if k != "save_dir"}, folder)
    kwargs["save_dir"] = str(folder)
    if issubclass(cls, FeatvisBackend):
        kwargs["run_info"] = run_info
        try:
            return cls(**kwargs)
        except ConfigError as err:  # a picture format kwarg: say which backend's
            raise ConfigError(f"backends.{key}.kwargs.{err}") from None
    return MMEngineBackend(cls(**kwargs))


class FeatureVisualizer:
    """Sends every panel and scalar to all backends of the job."""

    def __init__(self, backends: Mapping[str, Mapping[str, Any]], save_dir: Path, run_info: RunInfo) -> None:
        self.backends: Dict[str, FeatvisBackend] = {
            key: build_backend(key, spec, Path(save_dir), run_info) for key, spec in backends.items()}

    def start(self) -> None:
        """Let backends that are slow to open (W&B) start in the background."""
        for backend in self.backends.values():
            backend.start()

    def resume(self, steps: int) -> None:
        """Going on from an earlier launch's first `steps` images (featvis.pipeline.resume)."""
        for backend in self.backends.values():
            backend.resume(steps)

    def add_config(self, config: Mapping[str, Any]) -> None:
        as_mmengine = Config(dict(config))
        for backend in self.backends.values():
            backend.add_config(as_mmengine)

    @property
    def formats(self) -> List[PictureFormat]:
        """The picture formats the backends store (featvis's local and W&B backends), each once."""
        return picture_formats(self.backends.values())

    def add_panels(self, panels: Sequence[Panel], step: int, image_id: str) -> None:
        """One input image's panels to every backend, all at `step`.

        Each picture is encoded at most once per format, whichever backends store it. On one
        thread per core: the backends that take pictures in any order (local files) encode
        and write them, and the encodings the others want are made alongside; then the
        others get the panels in order (W&B: one row per image), on this thread.
        """
        encoded = [Encoded(panel.picture) for panel in panels]
        any_order = [b for b in self.backends.values() if b.any_order]
        in_order = [b for b in self.backends.values() if not b.any_order]
        wanted = picture_formats(in_order)
        in_parallel([partial(backend.add_panel, panel, step=step, image_id=image_id, encoded=pictures)
                     for panel, pictures in zip(panels, encoded) for backend in any_order]
                    + [partial(pictures.data, fmt) for pictures in encoded for fmt in wanted])
        for panel, pictures in zip(panels, encoded):
            for backend in in_order:
                backend.add_panel(panel, step=step, image_id=image_id, encoded=pictures)

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """One step's scalars (e.g. `stats/<layer>/mean`) to every backend."""
        if not scalars:
            return
        for backend in self.backends.values():
            backend.add_scalars(dict(scalars), step=step)

    def close(self, failed: bool = False) -> None:
        errors: List[Exception] = []
        keys = []
        for key, backend in self.backends.items():
            try:
                backend.close(failed=failed)
            except Exception as err:  # close the others anyway
                errors.append(err)
                keys.append(key)
        if errors and not failed:
            message = "closing backends failed: " + "; ".join(f"{k}: {e}" for k, e in zip(keys, errors))
            # errors that say what to do (featvis's own) stay one line without "unexpected"
            kind = BackendError if all(isinstance(e, FeatvisError) for e in errors) else RuntimeError
            raise kind(message)

    def __enter__(self) -> "FeatureVisualizer":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(failed=exc_type is not None)
