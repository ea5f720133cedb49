"""featvis's Hydra callbacks (conf/config.yaml, `hydra.callbacks`).

- `OutputLock`: hold the run folder (a single run) or the sweep folder (a multirun)
  before Hydra writes anything into it, so a second job into a busy folder fails at
  once (featvis.config.output_folder); a sweep folder that is a system folder or holds
  anything already is refused, and the sweep's manifest written (featvis.sweep.manifest);
  a multirun's start is noted for the exit code and the failed jobs' lines (featvis.sweep.outcome);
- `SweepPlan`: when a sweep starts, write its plan (featvis.sweep.plan), so jobs that
  run the same model share forward passes;
- `SweepSummary`: after every job, rewrite the sweep's summary (featvis.sweep.summary),
  so it is complete when the last job ends even when one raised (Hydra then skips
  `on_multirun_end`; featvis's failed jobs return instead, except under FEATVIS_DEBUG);
  once every job has its result file, with the W&B summary run.

Neither of the last two ever fails a sweep: a problem is logged as a warning. A busy or
unwritable folder stops the run before it starts: `Abort` gets through Hydra's callback
runner, which would turn an Exception into a warning, to featvis.cli.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from featvis.config import output_folder
from featvis.errors import FeatvisError
from featvis.sweep import manifest, outcome

log = logging.getLogger(__name__)


class OutputLock(Callback):
    """One featvis job per folder: the run's or the sweep's folder is held from before Hydra writes into it."""

    def __init__(self) -> None:
        self._held: Optional[Path] = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._take(Path(str(config.hydra.run.dir)), output_folder.RUN_KEY)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._let_go()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        key = output_folder.SWEEP_KEY
        jobs = _planned_jobs(config)
        try:
            again = manifest.same_sweep(sweep_dir, jobs)  # the same sweep launched again: finish it
            if not (sweep_dir / output_folder.LOCK_FILE).exists():  # refused without leaving a lock file there
                output_folder.refuse_system_folder(sweep_dir, key)
                if not again:
                    manifest.refuse_used(sweep_dir, key)
            self._take(sweep_dir, key)  # a folder another sweep holds: that error first
            resumed = manifest.resume(sweep_dir, jobs) if again else None
            if resumed is None:
                manifest.refuse_used(sweep_dir, key)
                manifest.start(sweep_dir, jobs)
            else:
                _forget_unfinished(sweep_dir)
                log.info("featvis: launch %d of the sweep in %s: its jobs that ended ok are kept", resumed.launches,
                         sweep_dir)
        except FeatvisError as err:
            self._let_go()
            raise output_folder.Abort(err) from err
        outcome.started(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._let_go()

    def _take(self, folder: Path, key: str) -> None:
        try:
            self._held = output_folder.acquire(folder, key)
        except FeatvisError as err:
            raise output_folder.Abort(err) from err

    def _let_go(self) -> None:
        if self._held is not None:
            output_folder.release(self._held)
            self._held = None


def _forget_unfinished(sweep_dir: Path) -> None:
    """A sweep launched again: the result files of its jobs that did not end ok go (those jobs run again),
    so the summary counts the sweep done only when they are."""
    from featvis.sweep.results import RESULT_FILE  # noqa: PLC0415 (lazy: mmengine)

    for _, folder in manifest.job_dirs(sweep_dir):
        path = folder / RESULT_FILE
        try:
            if json.loads(path.read_text()).get("status") == "ok":
                continue
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            pass
        path.unlink(missing_ok=True)


def _planned_jobs(config: DictConfig) -> Optional[List[List[str]]]:
    """Each job's overrides, as the basic sweeper will make them; None when another sweeper decides."""
    try:
        from featvis.sweep.plan import sweep_overrides  # noqa: PLC0415 (lazy: Hydra makes these callbacks for --help)

        return sweep_overrides(config)
    except Exception as err:  # an override the sweeper itself will refuse, in its own words
        log.debug("sweep manifest: no job list: %s", err)
        return None


class SweepPlan(Callback):
    """Write the sweep's plan when a multirun starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from featvis.sweep.plan import write_plan  # noqa: PLC0415 (lazy: torch, mmseg)

            path = write_plan(Path(config.hydra.sweep.dir), config)
        except Exception as err:  # the plan saves time; it must never stop a sweep
            log.warning("featvis: no sweep plan, each job runs its own forward passes: %s", err)
            return
        if path is not None:
            log.info("featvis sweep plan: %s", path)


class SweepSummary(Callback):
    """Keep `<sweep dir>/summary/` up to date after every multirun job."""

    def __init__(self) -> None:
        self._complete: Optional[Path] = None  # a sweep whose final summary this process wrote

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir()
        if sweep_dir is None:
            return  # a single run: nothing to summarize
        last = self._all_done(sweep_dir)
        if self._summarize(sweep_dir, last=last) and last:
            self._complete = sweep_dir  # the basic launcher: on_multirun_end has nothing left to do

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(config.hydra.sweep.dir)
            if sweep_dir != self._complete:  # parallel launchers end their jobs in other processes
                self._summarize(sweep_dir, last=True)
        except Exception as err:
            log.warning("featvis sweep summary failed: %s", err)

    @staticmethod
    def _sweep_dir() -> Optional[Path]:
        try:
            hc = HydraConfig.get()
            return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
        except Exception:  # no Hydra runtime config: not a Hydra job
            return None

    @staticmethod
    def _all_done(sweep_dir: Path) -> bool:
        from featvis.sweep.plan import expected_jobs  # noqa: PLC0415 (lazy)
        from featvis.sweep.results import load_results  # noqa: PLC0415

        total = expected_jobs(sweep_dir)
        return total is not None and len(load_results(sweep_dir)) >= total

    @staticmethod
    def _summarize(sweep_dir: Path, last: bool) -> bool:
        try:
            from featvis.sweep.summary import INDEX_FILE, summarize  # noqa: PLC0415 (lazy)

            out = summarize(sweep_dir, wandb_run=last)
            log.info("sweep summary: %s", out / INDEX_FILE)
            return True
        except Exception as err:  # a summary must never fail a job
            log.warning("featvis sweep summary failed: %s", err)
            return False
