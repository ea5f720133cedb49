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


FILE, FOLDER = "a file", "a folder"


def file_kind(path: Union[str, Path]) -> Optional[str]:
    """FILE, FOLDER, what else `path` is ("a FIFO", "a symbolic link loop", ...), or None when nothing is
    there. Only `stat` is used: nothing is opened, so a FIFO cannot block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else None
    except OSError as err:  # ELOOP, EACCES on a folder above, a name too long, ...
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"not accessible ({err.strerror or err.__class__.__name__})"
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


_SAID = {None: "does not exist", FOLDER: "is a folder, not a file", "a FIFO": "is a FIFO (named pipe), not a file",
         "a broken symbolic link": "is a broken link", "a symbolic link loop": "is a loop of symbolic links",
         "not a regular file": "is not a regular file"}


def not_a_file(path: Union[str, Path]) -> Optional[str]:
    """None for a regular file (links followed); else what `path` is instead, as words after its name."""
    kind = file_kind(path)
    if kind == FILE:
        return None
    if kind in _SAID:
        return _SAID[kind]
    if kind.startswith("not accessible"):
        return "cannot be read" + kind[len("not accessible"):]
    return f"is {kind}, not a file"
