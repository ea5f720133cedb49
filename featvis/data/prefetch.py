"""Decode the next images while the model runs: an iterator read ahead by a worker thread.

    with Prefetch(iter_loaded(samples, problems), depth=4) as items:
        for item in items: ...

OpenCV releases the GIL while it decodes, so the worker's decoding overlaps the model's
forward pass. At most `depth` items wait (memory stays flat). An exception in the worker
is raised in the reader's thread, in order, after the items before it; leaving the block
early (an error, Ctrl-C) stops the worker after the item it is on.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    def __init__(self, items: Iterable[T], depth: int = 2) -> None:
        self._items = items
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="featvis-decode", daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._read()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        while self._thread.is_alive():  # make room, so a worker blocked on a full queue sees the stop
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as err:  # raised in the reader's thread
            self._put(_Raised(err))
            return
        self._put(_END)

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> Iterator[T]:
        while True:
            value: Optional[Any] = self._queue.get()
            if value is _END:
                return
            if isinstance(value, _Raised):
                raise value.error
            yield value
