"""One job's visualizer: the backends of the `backends` config group, built fresh per job, and the fan-out to them.

MMEngine's `Visualizer` is a process-wide singleton, and the jobs of a Hydra multirun
under the basic launcher share one process, so featvis does not use it: each job
builds its own backends from MMEngine's VISBACKENDS registry and closes them when it
ends, telling them whether the job failed (W&B marks its run failed). featvis's backends
implement featvis.backends.base.FeatvisBackend; MMEngine's own are wrapped in
featvis.backends.adapter.MMEngineBackend, so every backend is driven alike.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Set

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


def build_backend(key: str, spec: Mapping[str, Any], job_dir: Path, run_info: RunInfo) -> FeatvisBackend:
    """Backend `key` of the `backends` group: `spec` is {type, kwargs}; save_dir defaults per backend."""
    cls = VISBACKENDS.get(spec["type"])
    kwargs = dict(spec.get("kwargs") or {})
    if issubclass(cls, FeatvisBackend):
        kwargs.setdefault("save_dir", str(cls.save_dir_for(job_dir, key)))
        kwargs["run_info"] = run_info
        try:
            return cls(**kwargs)
        except ConfigError as err:  # a picture format kwarg: say which backend's
            raise ConfigError(f"backends.{key}.kwargs.{err}") from None
    kwargs.setdefault("save_dir", str(job_dir / key))
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
