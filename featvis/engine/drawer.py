"""Draw and log each image's pictures in worker threads while the model runs the next images."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from featvis.backends.encoding import workers
from featvis.backends.visualizer import FeatureVisualizer
from featvis.engine.result import JobResult
from featvis.record.recorded import Recorded
from featvis.reduce.base import Reduced
from featvis.render.align import crop_valid
from featvis.render.panel import Panel
from featvis.render.panels import DrawStyle, make_panels
from featvis.render.scales import SharedRange

log = logging.getLogger(__name__)


class Drawer:
    """Draws and logs each image's panels in worker threads, while the model runs the next.

    Images are drawn on a pool of one thread per core (OpenCV and numpy release the GIL on
    whole pictures), several at once, and logged by one thread in the order they came, so
    each backend sees steps in order. A bounded queue keeps at most `depth` images waiting
    (default: one per drawing thread, at least 2), so memory stays flat; an error in a
    worker stops the job at the next submit or when the drawer closes. When the job
    stops (an error, Ctrl-C, SIGTERM), what is still queued is dropped, not drawn, and the
    worker is waited for before the backends close.
    With normalize.mode=shared the colour range of a layer depends on every image, so
    the (small, reduced) maps of all images are kept and drawn when the last one is in,
    unless the ranges over the run are given (`ranges`: the shards of a job, which fitted
    them over the whole split first).
    """

    def __init__(self, style: DrawStyle, visualizer: FeatureVisualizer, result: JobResult,
                 depth: Optional[int] = None, ranges: Optional[Dict[str, SharedRange]] = None,
                 logged: Optional[Callable[[str, List[str]], None]] = None) -> None:
        self.style, self.visualizer, self.result = style, visualizer, result
        self.logged = logged  # called with (image, its panel names) once its pictures are in every backend
        self.warned: Set[Tuple[str, str]] = set()  # (layer, problem) pairs already logged
        self.shared: Optional[Dict[str, SharedRange]] = (  # layer -> its range over the run
            None if style.scale.mode != "shared" else {} if ranges is None else dict(ranges))
        self._hold = self.shared is not None and ranges is None  # the ranges come from every image: hold them
        self._held: List[Recorded] = []  # shared mode: everything, drawn at the end
        self._pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="featvis-draw")
        self._queue: "queue.Queue[Optional[Tuple[Recorded, Future]]]" = queue.Queue(
            maxsize=depth or max(2, workers()))
        self._error: Optional[BaseException] = None
        self._stop = False  # the job is stopping: drop what is queued
        self._thread = threading.Thread(target=self._work, name="featvis-draw", daemon=True)

    def __enter__(self) -> "Drawer":
        self._thread.start()
        return self

    def submit(self, recorded: Recorded) -> None:
        self._raise_worker_error()
        if not self._hold:
            self._queue.put(self._start(recorded))
            return
        self._held.append(recorded)
        observe_ranges(self.shared, recorded)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._stop = exc_type is not None
        try:
            if exc_type is None:
                for recorded in self._held:
                    self._queue.put(self._start(recorded))
            self._queue.put(None)  # the worker stops after what is queued
            self._thread.join()
        except BaseException:  # interrupted while waiting (SIGTERM): stop the worker before the backends close
            self._stop = True
            self._queue.put(None)  # the worker drains without drawing, so there is room
            self._thread.join()
            raise
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if exc_type is None:
            self._raise_worker_error()

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _start(self, recorded: Recorded) -> Tuple[Recorded, Future]:
        """Begin drawing an image's panels on the pool; the logging thread takes them in order."""
        return recorded, self._pool.submit(self._draw, recorded)

    def _draw(self, recorded: Recorded) -> Optional[List[Panel]]:
        if self._error is not None or self._stop:
            return None  # the job is stopping: nothing more to draw
        return make_panels(self.style, recorded, self.warned, self.shared)

    def _work(self) -> None:
        while (queued := self._queue.get()) is not None:
            recorded, drawing = queued
            if self._error is not None or self._stop:
                drawing.cancel()
                continue  # drain, so the producer never blocks
            try:
                panels = drawing.result()
                if panels is not None:
                    self._log(recorded, panels)
            except BaseException as err:  # re-raised in the job's thread
                self._error = err

    def _log(self, recorded: Recorded, panels: List[Panel]) -> None:
        step, stem = len(self.result.images), recorded.item.sample.stem
        self.visualizer.add_panels(panels, step=step, image_id=stem)
        scalars = stats_scalars(recorded.maps)
        if scalars:  # same step as the pictures: one W&B history row per image
            self.visualizer.add_scalars(scalars, step=step)
        self.result.images.append(stem)
        self.result.panels[stem] = [panel.name for panel in panels]
        if self.logged is not None:
            self.logged(stem, self.result.panels[stem])
        log.info("[%d] %s: %d pictures", step + 1, stem, len(panels))


def observe_ranges(ranges: Dict[str, SharedRange], recorded: Recorded) -> None:
    """Take an image's maps into each layer's range over the run (normalize.mode=shared); padding left out."""
    for layer, per_item in recorded.maps.items():
        shared = ranges.setdefault(layer, SharedRange())
        for m in per_item[0].maps:
            shared.update(crop_valid(m, recorded.sample.metainfo))


def stats_scalars(maps: Dict[str, List[Reduced]]) -> Dict[str, float]:
    """`stats/<layer>/<stat>` for every layer whose statistics were recorded (not Grad-CAM's)."""
    return {f"stats/{layer}/{key}": value for layer, per_item in maps.items()
            if per_item and per_item[0].stats for key, value in per_item[0].stats.items()}

