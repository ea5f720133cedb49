"""Where a session's pictures go besides the caller: featvis's backends, or an MMEngine Visualizer's.

- `backends`: the command line's form (`{key: {type, kwargs}}`, conf/backends/*.yaml) or short
  names (`["local", "wandb"]`), written under `save_dir` (featvis.backends.visualizer).
- `visualizer`: an MMEngine `Visualizer` the caller has (a training run's, whose W&B run is
  already open): each picture goes to its backends as `featvis/<image>/<panel>` (the same
  name for the same image and layer at every step), the activation statistics as scalars.
  MMEngine's LocalVisBackend writes `<name>_<step>.png` and does not make the folders a `/` in
  the name asks for: they are made here first. Its WandbVisBackend ignores `step`: featvis logs
  to that run directly, with `featvis/iter` as the x-axis of its keys (`to_mmengine`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from featvis.backends.base import RunInfo
from featvis.backends.visualizer import FeatureVisualizer
from featvis.errors import ConfigError
from featvis.render.panel import Panel

SHORT_NAMES: Dict[str, Dict[str, Any]] = {  # conf/backends/*.yaml, as data the engine needs without Hydra
    "local": {"type": "FeatvisLocalVisBackend", "kwargs": {"image_format": "png"}},
    "wandb": {"type": "FeatvisWandbVisBackend", "kwargs": {"project": "featvis", "mode": "auto"}},
    "tensorboard": {"type": "TensorboardVisBackend", "kwargs": {}},
}

Backends = Union[None, str, Sequence[str], Mapping[str, Mapping[str, Any]]]


def backend_specs(backends: Backends) -> Dict[str, Dict[str, Any]]:
    """`backends` in the command line's form; ConfigError for a short name featvis does not know."""
    if backends is None:
        return {}
    if isinstance(backends, str):
        backends = [backends]
    if isinstance(backends, Mapping):
        return {str(k): {"type": v["type"], "kwargs": dict(v.get("kwargs") or {})} for k, v in backends.items()}
    unknown = [name for name in backends if name not in SHORT_NAMES]
    if unknown:
        raise ConfigError(f"backend {unknown[0]!r} is unknown: use {sorted(SHORT_NAMES)} or a mapping "
                          "{key: {type: <VISBACKENDS class>, kwargs: {...}}}")
    return {name: {"type": SHORT_NAMES[name]["type"], "kwargs": dict(SHORT_NAMES[name]["kwargs"])}
            for name in backends}


class Sink:
    """Pictures and scalars of each image to featvis's backends or an MMEngine Visualizer; nothing when neither."""

    def __init__(self, backends: Backends = None, save_dir: Optional[Union[str, Path]] = None,
                 visualizer: Any = None, run: Optional[RunInfo] = None, once: Sequence[str] = ()) -> None:
        specs = backend_specs(backends)
        if specs and save_dir is None:
            raise ConfigError("backends need a save_dir: the folder their files go to")
        self.featvis = FeatureVisualizer(specs, Path(save_dir), run or RunInfo("featvis", "session", None)) \
            if specs else None
        self.mmengine = visualizer
        self.once, self._logged = set(once), set()  # panels logged once per image: (image, panel) done
        self._started = False

    def start(self, config: Optional[Mapping[str, Any]] = None) -> None:
        if self.featvis is not None and not self._started:
            self.featvis.start()
            if config:
                self.featvis.add_config(config)
        self._started = True

    def add(self, panels: Sequence[Panel], scalars: Mapping[str, float], step: int, image_id: str) -> None:
        if self.once:
            panels = [p for p in panels if p.name not in self.once or (image_id, p.name) not in self._logged]
            self._logged |= {(image_id, p.name) for p in panels if p.name in self.once}
        if self.featvis is not None:
            self.start()
            self.featvis.add_panels(panels, step=step, image_id=image_id)
            self.featvis.add_scalars(scalars, step=step)
        if self.mmengine is not None:
            to_mmengine(self.mmengine, panels, {f"featvis/{k}": v for k, v in scalars.items()}, step, image_id)

    def close(self, failed: bool = False) -> None:
        if self.featvis is not None:
            featvis, self.featvis = self.featvis, None
            featvis.close(failed=failed)


STEP_KEY = "featvis/iter"  # W&B: the x-axis of every featvis/* key (define_metric), the caller's step


def to_mmengine(visualizer: Any, panels: Sequence[Panel], scalars: Mapping[str, float], step: int,
                image_id: str) -> None:
    """One image's pictures and scalars to each backend of an MMEngine Visualizer, at `step`.

    MMEngine's WandbVisBackend ignores `step` (wandb counts its own steps, one per log call), so a
    W&B backend gets one `log` per image with `featvis/iter` = step, the x-axis W&B is told to use
    for every featvis/* key: its step slider and charts then follow the caller's iterations."""
    from mmengine.visualization.vis_backend import WandbVisBackend  # noqa: PLC0415 (only with a Visualizer)

    for backend in _backends(visualizer):
        if isinstance(backend, WandbVisBackend):
            wandb = backend.experiment
            if not getattr(backend, "_featvis_axis", False):
                wandb.define_metric(STEP_KEY)
                wandb.define_metric("featvis/*", step_metric=STEP_KEY)
                backend._featvis_axis = True
            row = {f"featvis/{image_id}/{p.name}": wandb.Image(p.picture, caption=p.caption) for p in panels}
            wandb.log({**row, **scalars, STEP_KEY: step})
            continue
        for panel in panels:
            name = f"featvis/{image_id}/{panel.name}"
            _make_local_folders(backend, name)
            backend.add_image(name, panel.picture, step=step)
        if scalars:
            backend.add_scalars(dict(scalars), step=step)


def add_scalars(visualizer: Any, scalars: Mapping[str, float], step: int) -> None:
    """Scalars to each backend of an MMEngine Visualizer at `step` (W&B: on the featvis/iter axis)."""
    from mmengine.visualization.vis_backend import WandbVisBackend  # noqa: PLC0415

    for backend in _backends(visualizer):
        if isinstance(backend, WandbVisBackend):
            backend.experiment.log({**scalars, STEP_KEY: step})
        else:
            backend.add_scalars(dict(scalars), step=step)


def add_table(visualizer: Any, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
    """A small table to each W&B backend of an MMEngine Visualizer (`wandb.Table`, on the featvis/iter axis);
    MMEngine's other backends have no tables (the caller logs the same as a line)."""
    from mmengine.visualization.vis_backend import WandbVisBackend  # noqa: PLC0415

    for backend in _backends(visualizer):
        if isinstance(backend, WandbVisBackend):
            wandb = backend.experiment
            wandb.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows]), STEP_KEY: step})


def _make_local_folders(backend: Any, name: str) -> None:
    """The folders `<img_save_dir>/featvis/<image>/` that MMEngine's LocalVisBackend would write into
    (its add_image makes only `img_save_dir` itself, and cv2.imwrite fails silently without them)."""
    from mmengine.visualization.vis_backend import LocalVisBackend  # noqa: PLC0415 (only with a Visualizer)

    if isinstance(backend, LocalVisBackend):
        backend.experiment  # noqa: B018 (MMEngine sets up its folders on first use: img_save_dir made absolute)
        os.makedirs(os.path.dirname(os.path.join(backend._img_save_dir, name)), exist_ok=True)


def _backends(visualizer: Any) -> Iterable[Any]:
    found = getattr(visualizer, "_vis_backends", None)
    return found.values() if isinstance(found, Mapping) else ()
