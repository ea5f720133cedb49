"""One job's visualizer: the backends of the `backends` config group, built fresh per job.

MMEngine's `Visualizer` is a process-wide singleton, and the jobs of a Hydra multirun
under the basic launcher share one process, so featvis does not use it: each job
builds its own backends from MMEngine's VISBACKENDS registry and closes them when it
ends, marking run-tracking backends (W&B) as failed if the job failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Set

import numpy as np
from mmengine.registry import VISBACKENDS

import featvis.backends  # noqa: F401  (registers featvis's backends)
from featvis.backends.png import LazyPNG
from featvis.backends.run_info import RunAwareBackend, RunInfo


def known_backend_types() -> Set[str]:
    import mmengine.visualization  # noqa: F401  (registers MMEngine's backends)

    return set(VISBACKENDS.module_dict)


class FeatureVisualizer:
    """Sends every picture and scalar to all backends of the job."""

    def __init__(self, backends: Mapping[str, Mapping[str, Any]], save_dir: Path, run_info: RunInfo) -> None:
        self.backends: Dict[str, Any] = {}
        for key, spec in backends.items():
            cls = VISBACKENDS.get(spec["type"])
            kwargs = dict(spec.get("kwargs") or {})
            if issubclass(cls, RunAwareBackend):  # W&B: makes its own `wandb/` folder
                kwargs["run_info"] = run_info
                kwargs.setdefault("save_dir", str(save_dir))
            kwargs.setdefault("save_dir", str(save_dir / key))
            self.backends[key] = cls(**kwargs)

    def start(self) -> None:
        """Let backends that are slow to open (W&B) start in the background."""
        for backend in self.backends.values():
            if hasattr(backend, "start"):
                backend.start()

    def add_config(self, config: Mapping[str, Any]) -> None:
        from mmengine.config import Config

        as_mmengine = Config(dict(config))
        for backend in self.backends.values():
            if not isinstance(backend, RunAwareBackend):  # W&B got it at init
                backend.add_config(as_mmengine)

    @property
    def stores_png(self) -> bool:
        """Whether a backend writes PNG files (featvis's local and W&B backends)."""
        return any(getattr(b, "stores_png", False) for b in self.backends.values())

    def add_image(self, name: str, image: np.ndarray, step: int, **meta: Any) -> None:
        meta.setdefault("png", LazyPNG(image))  # encoded once, by the first backend that stores a PNG
        for backend in self.backends.values():
            backend.add_image(name, image, step=step, **meta)

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """One step's scalars (e.g. `stats/<layer>/mean`) to every backend."""
        if not scalars:
            return
        for backend in self.backends.values():
            backend.add_scalars(dict(scalars), step=step)

    def close(self, failed: bool = False) -> None:
        errors = []
        for key, backend in self.backends.items():
            if isinstance(backend, RunAwareBackend):
                backend.failed = failed
            try:
                backend.close()
            except Exception as err:  # close the others anyway
                errors.append(f"{key}: {err}")
        if errors and not failed:
            raise RuntimeError("closing backends failed: " + "; ".join(errors))

    def __enter__(self) -> "FeatureVisualizer":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(failed=exc_type is not None)
