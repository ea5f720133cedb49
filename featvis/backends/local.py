"""PNG files, one folder per input image: `<save_dir>/<image>/<panel>.png`.

Full-size PNG by default (lossless: the files hold exactly the drawn pictures); the
backend's `image_format`, `quality` and `max_side` kwargs choose another
(featvis.backends.encoding), e.g. JPEG for a whole validation split.

Unlike MMEngine's LocalVisBackend (`vis_image/<name>_<step>.png`, which cannot write
names holding a `/`), panel names such as `featmap/decode_head` become sub-folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml
from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import force_init_env

from featvis.backends.base import FeatvisBackend, RunInfo
from featvis.backends.encoding import PNG, Encoded, PictureFormat, write_picture
from featvis.render.panel import Panel

SCALARS = "scalars.jsonl"


def panel_file(root: Path, image_id: str, panel: str, suffix: str = PNG.suffix) -> Path:
    """Where the local backend writes picture `panel` of image `image_id` under its folder `root`.

    The one place that knows this layout: the sweep summary reads pictures back through it.
    """
    return Path(root) / image_id / f"{panel}{suffix}"


@VISBACKENDS.register_module()
class FeatvisLocalVisBackend(FeatvisBackend):
    any_order = True  # one file per picture: written on the encoding threads

    def __init__(self, save_dir: str, run_info: Optional[RunInfo] = None, image_format: str = "png",
                 quality: int = 95, max_side: Optional[int] = None) -> None:
        super().__init__(save_dir, run_info, PictureFormat(image_format, quality, max_side))
        self._root = Path(save_dir)

    @property  # type: ignore[misc]
    @force_init_env
    def experiment(self) -> "FeatvisLocalVisBackend":
        return self

    def _init_env(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    @force_init_env
    def add_config(self, config: Any, **kwargs: Any) -> None:
        """The resolved job config as YAML (an mmengine Config or a plain mapping)."""
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        (self._root / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def resume(self, steps: int) -> None:
        """Keep the scalars of steps below `steps` (an earlier launch's whole images); their pictures stay,
        the next ones are written again."""
        path = self._root / SCALARS
        try:
            lines = path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = []
        for line in lines:
            try:
                if line.endswith("\n") and json.loads(line).get("step", steps) < steps:
                    kept.append(line)
            except ValueError:  # a line cut short by the kill
                continue
        path.write_text("".join(kept))

    @force_init_env
    def add_panel(self, panel: Panel, step: int, image_id: str, encoded: Encoded) -> None:
        fmt = self.picture_format
        path = panel_file(self._root, image_id, panel.name, fmt.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_picture(path, panel.picture, encoded, fmt)

    @force_init_env
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None,
                    **kwargs: Any) -> None:
        with open(self._root / SCALARS, "a") as f:
            f.write(json.dumps({"step": step, **scalar_dict}) + "\n")
