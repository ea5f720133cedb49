"""The W&B run of a job, in a process of its own: the client the backend talks to, and that process.

wandb is pure Python on the job's side of its service: importing it, `wandb.init` (which
imports pydantic models whose set-up scans every loaded module: three times slower once
torch and mmseg are in), one `wandb.Image` per picture (masks are PNG-encoded;
`size_from_header` spares decoding the pictures) and `finish`. In the job's process all of
that holds the GIL that the model's forward pass, the hooks and the drawing threads need
between their C calls: a fast model's job ran 1.6x slower with W&B than without. Here it
runs in a child process, started by run.py before it imports torch and mmseg (`prewarm_for`)
or else when the backend is built (`prewarm`), so that its imports overlap the job's, and
kept for the next job of the process (a sweep under Hydra's basic launcher opens one run per
job in it).

The protocol is data only, one JSON object per line, never pickle:
  job -> worker (its stdin): {"op": "open", "id", "spec", "mode", "files"}, {"op": "log", "step", "row"},
      {"op": "table", "columns", "data"}, {"op": "finish", "id", "exit_code"}, {"op": "quit"};
  worker -> job (a pipe of its own; the worker's stdout and stderr go to a file):
      {"id", "mode"} or {"id", "error"} for open/finish, {"error", "op"} when a log or table
      failed, {"log": level, "name", "message"} for featvis's and wandb's messages.
A picture in a row or table is {"picture": file, "caption", "masks": {name: {"file": .npy of
uint8 labels, "class_labels": [[value, name], ...]}}}; the worker makes it a `wandb.Image`
(once: the table reuses the logged one). The worker ignores SIGINT and SIGTERM (they reach
the whole process group): the job finishes its run, failed or not; if the job dies, the
worker sees its stdin close and finishes the open run with exit code 1. If the worker dies,
the job learns it at its next picture (`WandbProcess.check`), not when it closes the run.

wandb's own files (`WandbFiles`) go to the `files` folder each open names (the job's
`.wandb-internal/`, featvis.backends.wandb.files_dir_for), never to the home folder or /tmp:
the worker imports wandb at prewarm, before any job's folder is known, with its import-time
temporary folders made only on first use (`_made_on_use`), and starts wandb's service only
at its first open, in that run's folder. The service's files (its log, its socket, the
artifact cache) stay in the first run's folder for the worker's life; each run's staged
artifact files (its `featvis/table`) go to its own.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from featvis.backends.wandb_run import RunSpec, open_run
from featvis.errors import BackendError

log = logging.getLogger(__name__)


class WandbProcessError(BackendError):
    """The W&B worker failed or died; the message is its error's one line."""


class WandbProcess:
    """The job's side: commands are queued and written by a thread (the job never blocks on
    the pipe while the worker is busy opening the run); replies are read by another."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self._output = tempfile.TemporaryFile()  # the worker's stdout and stderr: its last line explains a crash
        self.env = _wandb_env()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(write_fd)], stdin=subprocess.PIPE, env=_child_env(),
                stdout=self._output, stderr=self._output, pass_fds=(write_fd,), close_fds=True)
        finally:
            os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r", encoding="utf-8")
        self._ids = itertools.count(1)
        self._answers: Dict[int, Dict[str, Any]] = {}
        self._errors: "deque[str]" = deque()  # failed log/table commands, raised at the next check
        self._cond = threading.Condition()
        self._outbox: "deque[Optional[bytes]]" = deque()
        self._dead: Optional[str] = None
        threading.Thread(target=self._read, name="featvis-wandb-replies", daemon=True).start()
        threading.Thread(target=self._write, name="featvis-wandb-commands", daemon=True).start()

    # -- commands ------------------------------------------------------------------------
    def send(self, op: str, **fields: Any) -> int:
        """Queue a command; its id (requests: `wait(id)` for the answer)."""
        cid = next(self._ids)
        line = json.dumps({"op": op, "id": cid, **fields}, default=_plain).encode() + b"\n"
        with self._cond:
            self._outbox.append(line)
            self._cond.notify_all()
        return cid

    def wait(self, cid: int) -> Dict[str, Any]:
        """The worker's answer to command `cid`; WandbProcessError if it failed or the worker died."""
        with self._cond:
            while cid not in self._answers and self._dead is None:
                self._cond.wait()
            answer = self._answers.pop(cid, None)
        if answer is None:
            raise WandbProcessError(self._dead or "the W&B worker stopped")
        if "error" in answer:
            raise WandbProcessError(answer["error"])
        return answer

    def answered(self, cid: int) -> bool:
        with self._cond:
            return cid in self._answers or self._dead is not None

    def raise_errors(self) -> None:
        """Raise the first error of a logging command since the last call."""
        with self._cond:
            error = self._errors.popleft() if self._errors else None
            self._errors.clear()
        if error is not None:
            raise WandbProcessError(error)

    def check(self) -> None:
        """`raise_errors`, and raise if the worker has died: called for every picture, it never waits
        for a live worker (a peek at the process table, a few microseconds), so a worker killed mid-job
        stops the job at its next picture instead of when the job closes the run (48 s later on a
        40-image job, every image drawn for nothing).

        The death is seen without reaping the process (`waitid` with WNOWAIT): the reply thread reaps
        it and words the error with the worker's last line; this waits for that, briefly.
        """
        self.raise_errors()
        if self._dead is None and not self._exited():
            return
        with self._cond:
            self._cond.wait_for(lambda: self._dead is not None, timeout=DEATH_WAIT_S)
            dead = self._dead
        raise WandbProcessError(dead or _death(self._proc.poll(), ""))

    def _exited(self) -> bool:
        if self._proc.returncode is not None:
            return True
        if not hasattr(os, "waitid"):  # not on every Unix: poll() may reap it first; wait() then reads its code
            return self._proc.poll() is not None
        try:
            return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already, by the reply thread
            return True

    def alive(self) -> bool:
        return self._dead is None and self._proc.poll() is None

    def quit(self) -> None:
        """Let the worker end (it finishes nothing: call after the run's `finish`)."""
        with self._cond:
            self._outbox.append(None)
            self._cond.notify_all()

    # -- threads -------------------------------------------------------------------------
    def _write(self) -> None:
        stdin = self._proc.stdin
        while True:
            with self._cond:
                while not self._outbox:
                    self._cond.wait()
                line = self._outbox.popleft()
            try:
                if line is None:
                    stdin.close()
                    return
                stdin.write(line)
                stdin.flush()
            except OSError:  # the worker is gone: the reader says why
                return

    def _read(self) -> None:
        for line in self._replies:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "log" in message:
                logging.getLogger(message.get("name") or __name__).log(
                    int(message["log"]), "%s", message.get("message", ""))
                continue
            with self._cond:
                if message.get("id") is not None:  # the answer to an open or a finish
                    self._answers[int(message["id"])] = message
                else:
                    self._errors.append(message.get("error", "unknown W&B worker error"))
                self._cond.notify_all()
        code = self._proc.wait()
        with self._cond:
            self._dead = _death(code, _last_line(self._output))
            self._cond.notify_all()


def _death(code: Optional[int], last_line: str) -> str:
    """The one line that says the worker died."""
    return (f"the W&B worker process exited (code {code}){last_line}; "
            "the run keeps what it logged; rerun the job, or use backends=[local] to skip W&B")


EXIT_WAIT_S = 5.0  # how long the process waits at exit for its idle workers to end
DEATH_WAIT_S = 5.0  # how long `check` waits for the reply thread to word a dead worker's error
_IDLE: List[WandbProcess] = []  # workers whose run is finished, for the process's next job
_IDLE_LOCK = threading.Lock()


def acquire() -> WandbProcess:
    """An idle worker started with the same WANDB_* environment, or a new one."""
    with _IDLE_LOCK:
        while _IDLE:
            worker = _IDLE.pop()
            if _fits(worker):
                return worker
            worker.quit()
    return WandbProcess()


def prewarm() -> None:
    """Start a worker now, if none is idle, so that it imports wandb while the job loads its model."""
    with _IDLE_LOCK:
        if not any(_fits(w) for w in _IDLE):
            _IDLE.append(WandbProcess())


# Hydra's flags that print something and run no job
NO_JOB_FLAGS = ("-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-p", "--package", "-sc",
                "--shell-completion")


def wanted_by(argv: Sequence[str]) -> bool:
    """Whether a `run.py` command line will probably open a W&B run, read before its config is composed.

    The default config logs to W&B; these say it will not: a Hydra flag that runs no job,
    `mode=list`, `wandb.mode=disabled`, `backends=...` without wandb, `~backends(.wandb)`.
    A wrong guess costs a worker that imports wandb and ends unused, or the time prewarming saves.
    """
    for arg in argv:
        if arg.split("=", 1)[0] in NO_JOB_FLAGS:  # --cfg and --cfg=job alike
            return False
        key, _, value = arg.lstrip("+").partition("=")
        if key in ("~backends", "~backends.wandb") or (key, value) in (("mode", "list"), ("wandb.mode", "disabled")):
            return False
        if key == "backends" and "wandb" not in value:
            return False
    return True


def prewarm_for(argv: Sequence[str]) -> None:
    """`prewarm` when the command line will probably open a W&B run (`wanted_by`); run.py calls it
    first thing, so that the worker imports wandb on another core while the job's process spends
    seconds importing torch and mmseg (a default job: about 0.8 s sooner). wandb's service starts
    with the first run, once the job's folder is known (see the module docstring)."""
    if wanted_by(argv):
        prewarm()


def release(worker: WandbProcess) -> None:
    """Keep a worker whose run is finished for the next job (it ends with this process)."""
    if worker.alive():
        with _IDLE_LOCK:
            _IDLE.append(worker)


@atexit.register
def _shutdown() -> None:
    """At exit, let idle workers end and wait for them (a fraction of a second): no process is left behind."""
    with _IDLE_LOCK:
        idle = list(_IDLE)
        _IDLE.clear()
    for worker in idle:
        worker.quit()
    for worker in idle:
        try:
            worker._proc.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:  # it ends on its own when it reads the end of its input
            pass


def _fits(worker: WandbProcess) -> bool:
    """An idle worker this job can use: alive, and started with today's WANDB_* environment."""
    return worker.alive() and worker.env == _wandb_env()


# wandb saves the address of the service a process started in that process's environment (WANDB_SERVICE),
# so that its children use it: a worker started after this process opened a run of its own (the sweep
# summary's) would log through that service, whose log and files are in ~/.cache and /tmp, not the job's
PARENT_SERVICE = "WANDB_SERVICE"


def _wandb_env() -> Dict[str, str]:
    """What wandb reads from the environment once per process (a worker serves one such set)."""
    return {k: v for k, v in os.environ.items()
            if (k.startswith("WANDB_") or k == "NETRC") and k != PARENT_SERVICE}


def _child_env() -> Dict[str, str]:
    """This environment, with this process's featvis first on the path: the worker runs the same code
    and starts wandb's service of its own."""
    root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k != PARENT_SERVICE}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths in rows."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _last_line(output: Any) -> str:
    try:
        output.seek(0)
        lines = [ln.strip() for ln in output.read().decode(errors="replace").splitlines() if ln.strip()]
    except (OSError, ValueError):
        return ""
    return f": {lines[-1]}" if lines else ""


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
