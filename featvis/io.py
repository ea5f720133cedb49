"""Files: written so that a reader never sees half of one, and said for what they are when they are not files.

`write_atomic`: write a temporary file beside it, then rename. `not_a_file(path)`: why a path a
user gave cannot be read as a file ("does not exist", "is a folder", "is a FIFO (named pipe)"),
so that "does not exist" is said only of what does not exist.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union


def write_atomic(path: Union[str, Path], data: Union[bytes, str]) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Readers (a sweep summary reading a job's result file, a second job) see the old file
    or the new one, never a partial one; the temporary file is removed on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def not_a_file(path: Union[str, Path]) -> Optional[str]:
    """None for a regular file (links followed); else what `path` is instead, as words after its name."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken link" if os.path.islink(path) else "does not exist"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a loop of symbolic links"
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    return "is not a regular file"
