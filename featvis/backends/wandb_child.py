"""The W&B worker process (`python -m featvis.backends.wandb_child <reply fd>`): the job's run, opened,
logged and finished here, its commands read from stdin and its replies written to the fd.

It imports wandb when started (its import-time temporary folders made only on first use,
`_made_on_use`), starts wandb's service at the first open, once the job's folder is known
(`WandbFiles`: the service's log, port file and temporaries in `<job>/.wandb-internal/`), reads
each picture's size from its file header instead of decoding it (`size_from_header`), and polls
for the service's port file every 10 ms (`quick_service_start`). SIGINT and SIGTERM are ignored:
the job decides when its run ends; when the job dies, the run is finished and marked failed.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from featvis.backends.wandb_run import RunSpec, open_run

log = logging.getLogger(__name__)



# -- the worker process ------------------------------------------------------------------
class _Forward(logging.Handler):
    """featvis's log records (wandb's terminal messages among them) to the job's log."""

    def __init__(self, reply: Any) -> None:
        super().__init__(logging.DEBUG)
        self.reply = reply

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reply({"log": record.levelno, "name": record.name, "message": record.getMessage()})
        except Exception:  # noqa: BLE001  (a log line never stops the run)
            pass


class WandbFiles:
    """Where wandb puts its own files in this process: in the job's folder, never in the home folder or /tmp.

    What wandb 0.31 writes outside a run's folder (measured with strace on a default job, offline),
    and where it goes instead, under `folder` (a job's `.wandb-internal/`):
      - `data/`: WANDB_DATA_DIR, set for each run: `artifacts/staging/`, a copy of every file of the
        run's `featvis/table` artifact (its pictures too), which an offline run names by absolute
        path until `wandb sync` uploads them (~/.local/share/wandb before; never removed there);
      - `cache/`: WANDB_CACHE_DIR, for the service: its log `wandb/logs/core-debug-*.log`
        (~/.cache/wandb/logs before) and, online, wandb's artifact cache (read from wandb's source:
        uploaded artifact files go there; not measured, this machine has no network);
      - `tmp/`: the process's temporary folder (`tempfile.tempdir`, and TMPDIR for the service):
        the service's port file and socket, wandb's media temporaries (mask PNGs, the table's
        JSON) before they move into the run; emptied when the worker ends, and then removed.
    The service's (cache and tmp) are set once, before it starts, at the worker's first run; its
    socket path is made relative (the worker works in `folder`) so that it fits the 107 bytes a
    Unix socket path may have (wandb-core falls back to /tmp otherwise). WANDB_CONFIG_DIR is left
    alone: wandb only reads it (~/.config/wandb/settings, where `wandb login --host` keeps the server).
    """

    def __init__(self) -> None:
        self.home: Optional[Path] = None  # the first run's folder: the service's files

    def use(self, folder: Optional[str]) -> None:
        """Before opening a run whose wandb files go to `folder` (None: leave wandb's defaults)."""
        if folder is None:
            return
        folder = Path(folder)
        os.environ["WANDB_DATA_DIR"] = str(folder / "data")  # read at each staging, so per run
        if self.home is None:
            (folder / "tmp").mkdir(parents=True, exist_ok=True)
            os.chdir(folder)
            os.environ["TMPDIR"] = "tmp"
            os.environ["WANDB_CACHE_DIR"] = str(folder / "cache")
            tempfile.tempdir = str(folder / "tmp")
            self.home = folder
        else:
            Path(tempfile.tempdir or folder / "tmp").mkdir(parents=True, exist_ok=True)  # if it was removed

    def tidy(self) -> None:
        """At exit, after wandb's own clean-up: remove the temporary folder if it is empty."""
        if self.home is not None:
            try:
                (self.home / "tmp").rmdir()
            except OSError:  # not empty (a temporary file of a killed service), or already gone
                pass


class _MadeOnUse:
    """A `tempfile.TemporaryDirectory` whose folder is made when its name is first read, not when it is made.

    wandb makes two at import (`wandb.sdk.data_types._private.MEDIA_TMP`, `Artifact._TMP_DIR`),
    in the system's temporary folder, before the worker knows the job's folder; this makes
    them in the folder `tempfile` names when they are first used (then `WandbFiles`'s `tmp/`),
    again if it was removed, and removes them at exit as wandb asks.
    """

    def __init__(self, suffix: Optional[str] = None, prefix: Optional[str] = None, dir: Optional[str] = None,
                 *args: Any, **kwargs: Any) -> None:
        self._where = (suffix, prefix, dir)
        self._name: Optional[str] = None

    @property
    def name(self) -> str:
        if self._name is None or not os.path.isdir(self._name):
            self._name = tempfile.mkdtemp(*self._where)
        return self._name

    def cleanup(self) -> None:
        if self._name is not None:
            shutil.rmtree(self._name, ignore_errors=True)
            self._name = None

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


@contextmanager
def _made_on_use() -> Iterator[None]:
    """While wandb is imported: its temporary folders are made when used (`_MadeOnUse`)."""
    real = tempfile.TemporaryDirectory
    tempfile.TemporaryDirectory = _MadeOnUse  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        tempfile.TemporaryDirectory = real  # type: ignore[misc]


class _Worker:
    def __init__(self, reply: Any, files: WandbFiles) -> None:
        self.reply = reply
        self.files = files
        self.run: Any = None
        self.images: Dict[str, Any] = {}  # picture file -> its wandb.Image, for the table

    def handle(self, cmd: Dict[str, Any]) -> None:
        op, cid = cmd.get("op"), cmd.get("id")
        try:
            if op == "open":
                self.finish(1)  # an earlier run the job never finished
                self.files.use(cmd.get("files"))  # before wandb's service starts, in the first open_run
                self.run, mode = open_run(RunSpec(**cmd["spec"]), cmd["mode"])
                self.reply({"op": "open", "id": cid, "mode": mode})
            elif op == "log" and self.run is not None:
                self.run.log({k: self.value(v) for k, v in cmd["row"].items()}, step=int(cmd["step"]))
            elif op == "table" and self.run is not None:
                import wandb  # noqa: PLC0415

                data = [[self.value(v) for v in row] for row in cmd["data"]]
                # in the summary, not the history: the history keeps exactly one row per image
                self.run.summary["featvis/table"] = wandb.Table(columns=cmd["columns"], data=data,
                                                                allow_mixed_types=True)
            elif op == "finish":
                self.finish(int(cmd.get("exit_code", 0)))
                self.reply({"op": "finish", "id": cid})
        except Exception as err:  # noqa: BLE001  (reported to the job, which raises it)
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            answer = {"op": op, "error": f"W&B {op} failed: {text}"}
            self.reply({**answer, "id": cid} if op in ("open", "finish") else answer)

    def value(self, value: Any) -> Any:
        if not isinstance(value, dict) or "picture" not in value:
            return value
        path = value["picture"]
        if path not in self.images:
            import numpy as np  # noqa: PLC0415
            import wandb  # noqa: PLC0415

            masks = {name: {"mask_data": np.load(m["file"], allow_pickle=False),
                            "class_labels": {int(v): str(n) for v, n in m["class_labels"]}}
                     for name, m in (value.get("masks") or {}).items()}
            self.images[path] = wandb.Image(path, caption=value.get("caption"), masks=masks or None)
        return self.images[path]

    def finish(self, exit_code: int) -> None:
        if self.run is not None:
            run, self.run, self.images = self.run, None, {}
            run.finish(exit_code=exit_code)  # copies the logged media into the run


def size_from_header(wandb: Any) -> None:
    """Make `wandb.Image(path)` read a picture's size from its header and move the file into the run.

    wandb 0.31 decodes every picture given by path (`Image._initialize_from_path`) only to
    read its size (2.4 ms for a 1024x512 JPEG; its header takes 0.04 ms), then copies the
    file into the run's media folder. The pictures this process logs are featvis's staged
    files, written for the run and deleted after it, so they are moved (wandb's own path for
    its temporary files), not copied. A row of nine 1024x512 JPEGs costs this process 6 ms
    of CPU instead of 34-37 (benchmarks/bench_logging.py). Patched on the class, not a
    subclass: W&B tables type their cells by exact class. Only in this process, which logs
    nothing else; tests/test_private_apis.py pins the method.
    """
    from PIL import Image as PILImage  # noqa: PLC0415

    def from_path(self: Any, path: str) -> None:
        self._set_file(path, is_tmp=True)  # its sha256 and size; moved, not copied, when bound to the run
        with PILImage.open(path) as header:  # the header only: size and mode, no pixels decoded
            self._image = header
        self.format = os.path.splitext(path)[1][1:]

    wandb.Image._initialize_from_path = from_path


SERVICE_POLL_S = 0.01  # how often this process looks for wandb's service's port file while it starts


def quick_service_start() -> None:
    """Look for the port file of wandb's starting service every 10 ms instead of every 0.2 s.

    wandb 0.31 starts its service, then polls for the file in which the service writes its
    address (`service_port_file.poll_for_token`): the first look is too early (the service
    takes a few ms), the next 0.2 s later. Since the service starts at the first open (once
    the job's folder is known: `WandbFiles`), that sleep delayed the run, and so the job's
    close: in paired default jobs the wait for the run to finish went from 0.40 s (service
    started at prewarm) to 0.61 s, and 0.29 s with this (medians of 5). Patched in this
    process only, which starts no other service; the test of the worker pins `_SLEEP`.
    """
    import time  # noqa: PLC0415

    from wandb.sdk.lib.service import service_port_file  # noqa: PLC0415

    service_port_file._SLEEP = lambda seconds: time.sleep(min(seconds, SERVICE_POLL_S))


def main(reply_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the job decides when its run ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.fdopen(reply_fd, "w", encoding="utf-8")
    lock = threading.Lock()

    def reply(message: Dict[str, Any]) -> None:
        with lock:
            try:
                out.write(json.dumps(message) + "\n")
                out.flush()
            except (OSError, ValueError):  # the job is gone: still log what it sent, then finish
                pass

    featvis_log = logging.getLogger("featvis")
    featvis_log.setLevel(logging.DEBUG)
    featvis_log.addHandler(_Forward(reply))
    featvis_log.propagate = False
    files = WandbFiles()
    atexit.register(files.tidy)  # registered before wandb's own exit hooks, so it runs after them
    with _made_on_use():
        import wandb  # noqa: PLC0415  (while the job loads its model; the service starts at the first open)
    size_from_header(wandb)
    quick_service_start()

    worker = _Worker(reply, files)
    try:
        for line in sys.stdin.buffer:  # the job's end before any open: wandb's service never started
            cmd = json.loads(line)
            if cmd.get("op") == "quit":
                break
            worker.handle(cmd)
    finally:
        worker.finish(1)  # the job died or quit with a run open: keep what it logged, marked failed


if __name__ == "__main__":
    main(int(sys.argv[1]))
