"""Which W&B worker a job uses: one idle since an earlier job of this process, or a new one, started early.

Workers whose run is finished wait in `_IDLE` for the process's next job (a sweep's jobs under
Hydra's basic launcher share one), if started with the same WANDB_* environment; at exit they
are told to end and waited for. run.py calls `prewarm_for` first thing, so that a worker imports
wandb while the job's process imports torch and mmseg, unless its command line says no W&B run
will open (`wanted_by`).
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from typing import List, Sequence

from featvis.backends.wandb_worker import WandbProcess, _wandb_env

EXIT_WAIT_S = 5.0  # how long the process waits at exit for its idle workers to end
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
    """An idle worker this job can use: alive, started with today's WANDB_* environment, and its service's
    folder (its first job's .wandb-internal/) still there: a job folder deleted since (a temporary one in a
    script or a benchmark) takes the service's socket and files with it."""
    return worker.alive() and worker.env == _wandb_env() and (worker.home is None or worker.home.is_dir())
