"""stderr: featvis's own warning lines, and C libraries' messages moved into the job's log.

`warn(log, text)`: a warning the user must see (images set aside, a mask folder that
matches nothing): logged, and printed as one `featvis: warning: <text>` line on stderr,
where featvis's errors go too. Everything else a job says goes to its log.

C libraries' own messages on stderr (libpng's `libpng error: Read Error`) are moved into the job's log.

OpenCV's codecs print straight to file descriptor 2, past Python's `sys.stderr`, so a
truncated PNG would put a line of libpng's beside featvis's one-line error. `to_log`
points descriptor 2 at a temporary file around one call and logs what was written there.
Calls are serialized: the descriptor is the process's. Anything another thread writes
to stderr meanwhile lands in the log too, not on the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from typing import IO, Iterator, Optional

_lock = threading.Lock()

PREFIX = "featvis: warning: "


def warn(log: logging.Logger, text: str) -> None:
    """`text` (one line: what was left out or ignored, and what to do) in the log and on stderr."""
    log.warning("%s", text)
    try:
        print(PREFIX + " ".join(text.split()), file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed terminal or stderr: the log has it
        pass


@contextmanager
def to_log(log: logging.Logger, what: str) -> Iterator[None]:
    """`with to_log(log, "decoding x.png"): cv2.imread(...)`: the C library's stderr text, if any, is logged."""
    with _lock, ExitStack() as stack:
        try:
            sink: Optional[IO[bytes]] = stack.enter_context(tempfile.TemporaryFile())
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr at all, or no room for the file: run the call as it is
            sink = None
        if sink is None:
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = " ".join(sink.read().decode(errors="replace").split())
            if text:
                log.info("%s: %s", what, text)
