"""MMEngine's own backends (TensorBoard, MLflow, ...) behind featvis's backend interface.

The visualizer wraps every backend that is not a `FeatvisBackend` in `MMEngineBackend`,
so it drives all backends alike: a panel reaches the wrapped backend as MMEngine's
`add_image(name, picture, step)` (RGB, as MMEngine expects), without caption or extras.
"""

from __future__ import annotations

from typing import Any, Optional

from mmengine.visualization.vis_backend import BaseVisBackend

from featvis.backends.base import FeatvisBackend
from featvis.backends.encoding import Encoded
from featvis.render.panel import Panel


class MMEngineBackend(FeatvisBackend):
    """An MMEngine backend driven through featvis's interface; `inner` is the backend itself."""

    def __init__(self, inner: BaseVisBackend) -> None:
        super().__init__(inner._save_dir)
        self.inner = inner

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    def _init_env(self) -> None:
        """The wrapped backend sets itself up on first use."""

    def add_config(self, config: Any, **kwargs: Any) -> None:
        self.inner.add_config(config, **kwargs)

    def add_panel(self, panel: Panel, step: int, image_id: str, encoded: Encoded) -> None:
        self.inner.add_image(panel.name, panel.picture, step=step)

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.inner.add_scalar(name, value, step=step, **kwargs)

    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None,
                    **kwargs: Any) -> None:
        self.inner.add_scalars(scalar_dict, step=step, file_path=file_path, **kwargs)

    def close(self, failed: bool = False) -> None:
        self.inner.close()
