"""The W&B run of a job, in a process of its own: the client the backend talks to (`WandbProcess`).

wandb_pool.py chooses the worker a job uses (an idle one, or one started early); wandb_child.py
is the worker process. Why a process, and what travels between them:

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

import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any, Dict, Optional

from featvis.errors import BackendError

log = logging.getLogger(__name__)


CHILD = "featvis.backends.wandb_child"  # the worker process's module (python -m)


class WandbProcessError(BackendError):
    """The W&B worker failed or died; the message is its error's one line."""


class WandbProcess:
    """The job's side: commands are queued and written by a thread (the job never blocks on
    the pipe while the worker is busy opening the run); replies are read by another."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self._output = tempfile.TemporaryFile()  # the worker's stdout and stderr: its last line explains a crash
        self.env = _wandb_env()
        self.home: Optional[Path] = None  # its first run's files folder: wandb's service lives there (`opens`)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", CHILD, str(write_fd)], stdin=subprocess.PIPE, env=_child_env(),
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

    def opens(self, files: Path) -> None:
        """A run is opened with its files in `files`; the first one's is where wandb's service keeps its own."""
        if self.home is None:
            self.home = Path(files)

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


DEATH_WAIT_S = 5.0  # how long `check` waits for the reply thread to word a dead worker's error


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


