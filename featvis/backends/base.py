"""featvis's backend interface, declared on top of MMEngine's `BaseVisBackend`, and the job's `RunInfo`.

MMEngine's interface (`add_config`, `add_image`, `add_scalars`, `close`) knows a picture
only as a name and an array. featvis's backends (`FeatvisBackend`) take what the render
stage made of it instead, and a little more from the visualizer (featvis.backends.visualizer):

- `add_panel(panel, step, image_id, encoded)`: one `Panel` of input image `image_id` (every
  panel of an image has the same step), with the visualizer's shared encodings of it;
- `picture_format`: how the backend stores picture files (featvis.backends.encoding
  `PictureFormat`: format, quality, longest side), or None for a backend that takes the
  array (MMEngine's); the visualizer encodes all of an image's pictures in every format
  wanted at once, in parallel, and backends that want the same format share the bytes;
- `any_order`: True for a backend whose `add_panel` calls may run at the same time on
  several threads, in any order (one file per picture: featvis's local backend); the
  visualizer then writes an image's pictures while it encodes them, on all cores, instead
  of one after the other in its logging thread. False (the default) keeps the calls in
  order, on one thread (W&B's rows, MMEngine's backends);
- `start()`: begin slow set-up in the background, once every input has been checked;
- `close(failed)`: finish, knowing whether the job failed (W&B marks the run failed);
- `save_dir_for(job_dir, key)`: where the backend writes unless its config says;
- `run_info`: the job the backend records (a run tracker names its run after it).

They still take MMEngine's `add_image`, as a panel captioned with its name, so they work
under MMEngine's own Visualizer too. MMEngine's backends join a featvis job through
featvis.backends.adapter.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
from mmengine.visualization.vis_backend import BaseVisBackend

from featvis.backends.encoding import Encoded, PictureFormat
from featvis.render.panel import Panel


@dataclass(frozen=True)
class RunInfo:
    """What a run-tracking backend (W&B) needs to know about the job besides its save_dir."""

    name: str
    job_type: str
    group: Optional[str]
    config: Dict[str, Any] = field(default_factory=dict)  # the resolved job config


DEFAULT_RUN = RunInfo(name="featvis", job_type="default", group=None)


class FeatvisBackend(BaseVisBackend):
    """A visualization backend that takes featvis's panels; see the module docstring."""

    any_order = False  # add_panel may run concurrently, in any order (see the module docstring)

    def __init__(self, save_dir: str, run_info: Optional[RunInfo] = None,
                 picture_format: Optional[PictureFormat] = None) -> None:
        super().__init__(save_dir)
        self.run_info = run_info or DEFAULT_RUN
        self.picture_format = picture_format  # None: takes the picture itself, stores no file

    @classmethod
    def save_dir_for(cls, job_dir: Path, key: str) -> Path:
        """The backend's folder in the job's output folder: `<job_dir>/<key>` (its key in `backends`)."""
        return Path(job_dir) / key

    def start(self) -> None:
        """Begin slow set-up (opening a run) in the background; by default nothing to do."""

    def resume(self, steps: int) -> None:
        """The job goes on from an earlier launch that logged steps 0..steps-1 completely (its pieces,
        featvis.pipeline.resume) into this backend's folder: drop what it logged after them. By default
        nothing to do (a backend that opens a new run each launch, W&B, holds only this launch's steps)."""

    @abstractmethod
    def add_panel(self, panel: Panel, step: int, image_id: str, encoded: Encoded) -> None:
        """Record one picture of input image `image_id`; `encoded` holds its shared encodings
        (`encoded.data(self.picture_format)`: made once, whichever backends ask)."""

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        """MMEngine's interface: the picture as a panel called `name`, captioned `caption` if given."""
        panel = Panel(name, image, kwargs.get("caption") or name)
        self.add_panel(panel, step, kwargs.get("image_id") or f"{step:05d}", Encoded(image))

    def close(self, failed: bool = False) -> None:
        """Flush and finish; `failed`: the job failed. By default nothing to do."""
