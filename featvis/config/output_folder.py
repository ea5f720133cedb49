"""A job's output folder: one job at a time (a lock file), and one clear line when it cannot be written.

`hold(folder)` takes an exclusive `flock` on `<folder>/.featvis.lock` before anything is
written there, and writes the holder's PID and host into the file. The kernel releases
the lock when its process ends, however it ends (crash, SIGKILL), so a lock is never
stale: a second job into a busy folder fails at once (`FolderBusyError`, naming the
holder's PID), and whatever a job finds in a folder it holds (an old `featvis.partial/`)
was left by a job that is gone. Holding is re-entrant within a process: Hydra's callback
(featvis.sweep.callbacks.OutputLock) takes the run folder before Hydra writes into it,
and the pipeline takes it again around the job.

Plain `fcntl.flock` rather than the `filelock` package: the lock file must also carry
the holder's PID for the error line, and filelock (3.x) truncates the file on every
attempt to take it, or (4.x, on file systems without flock) keeps its own marker in it.
On NFS, Linux maps flock to NFS byte-range locks, which hold across hosts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from featvis.errors import FeatvisError

LOCK_FILE = ".featvis.lock"
RUN_KEY, SWEEP_KEY = "hydra.run.dir", "hydra.sweep.dir"  # the option that moves a single run, a sweep

_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device; free space or pass {key}=<another folder>",
    errno.EDQUOT: "disk quota exceeded; free space or pass {key}=<another folder>",
    errno.EROFS: "read-only file system; pass {key}=<another folder>",
    errno.EACCES: "permission denied; pass {key}=<another folder>",
    errno.EPERM: "operation not permitted; pass {key}=<another folder>",
}


class FolderBusyError(FeatvisError):
    """Another featvis job holds the output folder."""


class OutputFolderError(FeatvisError):
    """The output folder cannot be created or written."""


class Abort(BaseException):
    """A featvis error raised inside a Hydra callback.

    Hydra's callback runner turns every Exception into a warning and goes on; a
    BaseException gets through to featvis.cli.main, which prints `error` in one line.
    """

    def __init__(self, error: FeatvisError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Held:
    fd: int
    count: int


_held: Dict[str, _Held] = {}  # real path -> its lock
_mutex = threading.Lock()
_last: Optional[Tuple[Path, str]] = None  # the folder this process took last, and the option that moves it


def acquire(folder: Path, key: str = RUN_KEY) -> Path:
    """Hold `folder` (created if need be) for this process; FolderBusyError when another job holds it."""
    global _last
    folder = Path(os.path.abspath(folder))  # as Hydra names a job's folder (hydra.runtime.output_dir)
    refuse_system_folder(folder, key)
    with _mutex:
        _last = (folder, key)
        same = _key(folder)
        if same in _held:
            _held[same].count += 1
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise OutputFolderError(write_error_line(err, folder, key) or f"cannot write to {folder}: {err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusyError(f"{folder} is in use by {holder}: wait for it or pass {key}=<another folder>"
                                  ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()}\nhost={socket.gethostname()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, the error line just cannot name us
            pass
        _held[same] = _Held(fd, 1)
        return folder


# folders of the system whose insides are never a job's: refused with everything below them
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
                "/sys", "/run", "/var/lib", "/var/log", "/var/cache", "/var/spool")


def refuse_system_folder(folder: Path, key: str = RUN_KEY) -> None:
    """OutputFolderError when `folder` is the root, a folder right below it (/tmp, /home, /opt), the home
    folder or one above it, or inside a system tree (/etc, /usr, ...): a job writes its results, and a
    sweep its job folders and summary, straight into its folder."""
    real = Path(os.path.realpath(folder))
    home = Path(os.path.realpath(os.path.expanduser("~")))
    system = (real == real.parent or real.parent == Path("/") or real == home or real in home.parents
              or any(real == Path(tree) or Path(tree) in real.parents for tree in SYSTEM_TREES))
    if system:
        shown = f"{folder} ({real})" if Path(folder) != real else str(folder)
        raise OutputFolderError(f"{key}={shown} is a system folder or the home folder: a featvis job writes its "
                                f"results straight into its folder; pass a folder of its own, e.g. "
                                f"{key}={'multirun' if key == SWEEP_KEY else 'outputs'}/mine")


def release(folder: Path) -> None:
    """Let go of `folder` once every `acquire` of this process has been matched."""
    with _mutex:
        same = _key(Path(os.path.abspath(folder)))
        held = _held.get(same)
        if held is None:
            return
        held.count -= 1
        if held.count <= 0:
            del _held[same]
            os.close(held.fd)  # closing the descriptor releases the flock


@contextmanager
def hold(folder: Path, key: str = RUN_KEY) -> Iterator[Path]:
    """`with hold(folder):` the folder is this job's alone."""
    held = acquire(folder, key)
    try:
        yield held
    finally:
        release(held)


def _key(folder: Path) -> str:
    """One key per folder however it is spelt (`..`, symbolic links): a process must not wait on itself."""
    return os.path.realpath(folder)


def last() -> Optional[Path]:
    """The output folder this process took last (held or not), for messages after a job ended."""
    return _last[0] if _last else None


def _holder(fd: int) -> str:
    """`featvis job PID 123` (`on host h` when another host holds it), from the lock file's text."""
    try:
        fields = dict(line.split("=", 1) for line in os.pread(fd, 256, 0).decode().splitlines() if "=" in line)
    except (OSError, UnicodeDecodeError, ValueError):
        fields = {}
    pid, host = fields.get("pid", "").strip(), fields.get("host", "").strip()
    if not pid.isdigit():
        return "another featvis job"  # it has taken the lock and not yet written its PID
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"featvis job PID {pid}{where}"


def write_error_line(err: BaseException, folder: Optional[Path] = None, key: Optional[str] = None) -> Optional[str]:
    """`cannot write to <folder>: no space left on device; ...` when `err` (or its cause) is a disk error.

    `folder` defaults to the output folder this process took last, when the failed file
    is inside it (a write error carries no file name: then that folder too), else the file.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _WRITE_ERRORS:
            where, key, ours = _where(err.filename, folder, key)
            if ours or err.errno not in (errno.EACCES, errno.EPERM):  # a file we read may be forbidden too
                return f"cannot write to {where}: {_WRITE_ERRORS[err.errno].format(key=key)}"
        err = err.__cause__ or err.__context__
    return None


def _where(filename: object, folder: Optional[Path], key: Optional[str]) -> Tuple[str, str, bool]:
    """(what to name, the option that moves it, whether the file is in the output folder)."""
    if folder is None and _last is not None:
        folder, key = _last[0], key or _last[1]
    key = key or RUN_KEY
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return (str(folder) if folder is not None else "the output folder"), key, folder is not None
    path = Path(os.path.abspath(os.fsdecode(filename)))
    if folder is not None and (path == folder or folder in path.parents):
        return str(folder), key, True
    return str(path), key, False
