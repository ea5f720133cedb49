"""SIGTERM and SIGHUP handled like Ctrl-C.

`timeout`, Slurm, `docker stop` and Kubernetes stop a job with SIGTERM; a closed terminal
sends SIGHUP. `handle_termination()` (featvis.cli.main) makes either raise `Terminated`,
a KeyboardInterrupt, in the main thread, so the job unwinds exactly as on Ctrl-C: hooks
removed, the drawing thread stopped, every backend closed as failed (the W&B run is
finished with a non-zero exit code), the results left in `featvis.partial/`. The CLI
then prints one line and exits with 128 + the signal number (143, 129).

Only the first signal interrupts: later ones are ignored, so that the clean-up they
would cut short finishes (a second Ctrl-C still stops it, and SIGKILL always does).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal: unwinds like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # what a shell reports for a process the signal killed
        super().__init__(f"terminated ({self.name})")


def _raise(signum: int, frame: Optional[FrameType]) -> None:
    for other in HANDLED:  # the clean-up runs to its end
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def handle_termination() -> None:
    """Turn SIGTERM and SIGHUP into `Terminated` (main thread only; elsewhere Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _raise)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C."""
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def describe(interrupt: KeyboardInterrupt) -> str:
    """`terminated (SIGTERM)` or `interrupted` (Ctrl-C)."""
    return str(interrupt) if isinstance(interrupt, Terminated) else "interrupted"
