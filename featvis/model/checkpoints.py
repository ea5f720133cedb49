"""model.checkpoint -> a local file (or None for random weights).

URLs are fetched once into torch hub's checkpoint cache, the folder MMEngine's own
`load_url` uses, so a checkpoint downloaded by MMEngine before is reused. A URL
that cannot be reached fails within `timeout` seconds with one line that says what
to pass instead; the file is written to a temporary name and renamed when complete.
Reading the file is featvis.model.safe_load's job.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch.hub

from featvis.config.paths import resolve_asset
from featvis.errors import CheckpointError

_FIX = "pass a local file (model.checkpoint=/path/to/model.pth) or model.checkpoint=null for random weights"


def is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https")


def hub_cache_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME), as used by MMEngine's load_url."""

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(spec: Optional[str], timeout: float = 15.0) -> Optional[str]:
    """Return a local checkpoint path for `spec`, downloading a URL if it is not cached."""
    if spec is None:
        return None
    if is_url(spec):
        return _download(spec, timeout)
    path = Path(resolve_asset(spec)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {spec!r} does not exist: {_FIX}")
    return str(path)


def _download(url: str, timeout: float) -> str:
    target = hub_cache_dir() / os.path.basename(urlparse(url).path)
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise CheckpointError(f"cannot download checkpoint {url} ({reason}): {_FIX}") from err
    partial.rename(target)
    return str(target)

