"""SIGTERM and SIGHUP handled like Ctrl-C, and every stop signal obeyed within a bounded time.

`timeout`, Slurm, `docker stop` and Kubernetes stop a job with SIGTERM; a closed terminal
sends SIGHUP. `handle_termination()` (featvis.cli.main) makes either raise `Terminated`,
a KeyboardInterrupt, in the main thread, so the job unwinds exactly as on Ctrl-C: hooks
removed, the drawing thread stopped, every backend closed as failed (the W&B run is
finished with a non-zero exit code), the results left in `featvis.partial/`. The CLI
then prints one line and exits with 128 + the signal number (143, 129; 130 for Ctrl-C).

Only the first signal interrupts: later SIGTERMs and SIGHUPs are ignored, so that the
clean-up they would cut short finishes; a second Ctrl-C ends the process at once.

An exception raised from a signal handler can be lost: Python runs the handler between
two bytecodes of whatever runs then, and code that catches broadly, or C code that
clears errors, swallows it (measured: SIGTERM while Hydra composed a preset of nested
YAML aliases was turned into a config error by OmegaConf, then ignored, and the process
ran on for minutes). So the first signal also starts a watchdog: if the process has not
ended `grace()` seconds later (FEATVIS_STOP_GRACE, default 20), it prints one line and
ends with the signal's exit code, clean-up done or not; and `received()` tells the CLI a
signal came, whatever exception (or none) reached it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Optional

from featvis.errors import env_number

HANDLED = (signal.SIGTERM, signal.SIGHUP)
GRACE_S = 20.0  # seconds the clean-up may take after a stop signal (FEATVIS_STOP_GRACE)

_received: Optional[KeyboardInterrupt] = None  # the first stop signal this process got
_cancel = threading.Event()  # set by reset(): a watchdog started before it ends nothing


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal: unwinds like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # what a shell reports for a process the signal killed
        super().__init__(f"terminated ({self.name})")


def grace() -> float:
    try:
        return env_number("FEATVIS_STOP_GRACE", GRACE_S)
    except Exception:  # a bad value must not stop the stop
        return GRACE_S


def _stop(interrupt: KeyboardInterrupt) -> None:
    """The first stop signal: remember it, start the watchdog, and unwind the main thread."""
    global _received
    _received = interrupt
    for other in HANDLED:  # the clean-up runs to its end
        signal.signal(other, signal.SIG_IGN)
    signal.signal(signal.SIGINT, _again)
    threading.Thread(target=_watchdog, args=(interrupt, grace(), _cancel), name="featvis-stop", daemon=True).start()
    raise interrupt


def _raise(signum: int, frame: Optional[FrameType]) -> None:
    _stop(Terminated(signum))


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    _stop(KeyboardInterrupt())


def _again(signum: int, frame: Optional[FrameType]) -> None:
    """A second Ctrl-C: the user does not want to wait for the clean-up."""
    _exit_now(_received or KeyboardInterrupt(), "stopped at once by a second Ctrl-C")


def _watchdog(interrupt: KeyboardInterrupt, seconds: float, cancel: threading.Event) -> None:
    if cancel.wait(seconds):
        return
    _exit_now(interrupt, f"clean-up did not end within {seconds:g} s of the signal; stopped")


def _exit_now(interrupt: KeyboardInterrupt, why: str) -> None:
    try:
        sys.stderr.write(f"featvis: {describe(interrupt)}: {why}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(exit_code(interrupt))


def handle_termination() -> None:
    """Turn SIGTERM and SIGHUP into `Terminated`, watch Ctrl-C too (main thread only; elsewhere Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _raise)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when the parent ignores Ctrl-C
        signal.signal(signal.SIGINT, _interrupt)


def reset() -> None:
    """Forget a signal and call off its watchdog, SIGINT back to Python's own handler (tests in one process)."""
    global _received, _cancel
    _received = None
    _cancel.set()
    _cancel = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def received() -> Optional[KeyboardInterrupt]:
    """The stop signal this process got (as the exception it raised), or None."""
    return _received


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C."""
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def describe(interrupt: KeyboardInterrupt) -> str:
    """`terminated (SIGTERM)` or `interrupted` (Ctrl-C)."""
    return str(interrupt) if isinstance(interrupt, Terminated) else "interrupted"
