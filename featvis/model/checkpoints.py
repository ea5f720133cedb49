"""model.checkpoint (a path, a URL or null) -> a local file (or None for random weights).

URLs are fetched once into a folder of their own per URL under torch hub's checkpoint
cache (`<TORCH_HOME>/hub/checkpoints/featvis/<hash of the URL>/<file name>`, beside a
`url.txt` naming it), so two URLs that end in the same file name never share a file.
A URL that cannot be reached fails within `timeout` seconds with one line that says what
to pass instead. The download goes to a temporary name, is checked to be a readable
checkpoint (featvis.model.safe_load, nothing in it runs) and only then takes its name:
a broken download is never reused. Reading the file is featvis.model.safe_load's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch.hub

from featvis.data.paths import resolve_asset
from featvis.errors import CheckpointError
from featvis.io import not_a_file
from featvis.model.safe_load import verify_checkpoint_file

_FIX = "pass a local file (model.checkpoint=/path/to/model.pth) or model.checkpoint=null for random weights"


def is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https")


def hub_cache_dir() -> Path:
    """torch hub's checkpoint folder (honours TORCH_HOME), as used by MMEngine's load_url."""

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(url: str) -> Path:
    """Where the download of `url` is kept: a folder per URL (a hash of it), the URL's file name inside."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = os.path.basename(urlparse(url).path) or "checkpoint.pth"
    return hub_cache_dir() / "featvis" / digest / name


def resolve_checkpoint(spec: Optional[str], timeout: float = 15.0) -> Optional[str]:
    """Return a local checkpoint path for `spec`, downloading a URL if it is not cached."""
    if spec is None:
        return None
    if is_url(spec):
        return _download(spec, timeout)
    path = Path(resolve_asset(spec)).expanduser()
    what = not_a_file(path)
    if what == "is a folder, not a file":
        raise CheckpointError(f"checkpoint {spec!r} is a folder, not a file: pass the checkpoint file in it "
                              f"(model.checkpoint={spec.rstrip('/')}/<name>.pth) or model.checkpoint=null for "
                              "random weights")
    if what is not None:
        raise CheckpointError(f"checkpoint {spec!r} {what}: {_FIX}")
    return str(path)


def _download(url: str, timeout: float) -> str:
    target = cached_path(url)
    if target.is_file():
        return str(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as err:
        raise CheckpointError(f"cannot download checkpoint {url}: cannot write to {target.parent} "
                              f"({err.strerror or err}); set TORCH_HOME to a writable folder, or {_FIX}") from err
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        try:
            verify_checkpoint_file(str(partial), name=f"downloaded from {url}")
        except CheckpointError as err:
            raise CheckpointError(f"{err}; the download was not kept: check that {url} serves the checkpoint "
                                  "file itself") from err
        partial.replace(target)  # complete and readable: only now under its cached name
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(f"cannot download checkpoint {url} ({reason}): {_FIX}") from err
    finally:
        partial.unlink(missing_ok=True)
        if not target.exists():
            _remove_empty(target.parent)
    with contextlib.suppress(OSError):  # for whoever looks into the cache
        (target.parent / "url.txt").write_text(url + "\n")
    return str(target)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another download into it), or already gone
        pass
