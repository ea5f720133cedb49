"""The command line: run.py's Hydra app, with every error reported in one line.

Hydra is told to let exceptions through (HYDRA_FULL_ERROR=1) so that this module
prints them: `featvis: error: <what is wrong and how to fix it>` on stderr, exit code
1, no traceback. Set FEATVIS_DEBUG=1 to get the traceback instead.

Exit codes: 0 done; 1 failed (in a sweep: any job failed); 3 done with images skipped
(in a sweep: jobs only skipped images); 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (partial
results stay in `featvis.partial/`). A sweep prints one line per job that did not end
ok (featvis.sweep.outcome). Library chatter (warnings, W&B, libpng) goes to the job's
log, never to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Callable, List

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from featvis.config import bounded, choices, confined, data_only, output_folder
from featvis.config.job import from_hydra
from featvis.config.schema import Mode, register_configs, validate
from featvis.engine.result import RESULTS_DIR
from featvis.errors import FeatvisError, FittedOnlyError
from featvis.signals import describe, exit_code, handle_termination, received
from featvis.sweep import manifest, outcome, shards

log = logging.getLogger("featvis")

LIBRARY_NOISE = (
    r"``build_loss`` would be deprecated",
    r"Default ``avg_non_ignore`` is False",
    r"``MultiScaleDeformableAttention`` has been moved",
)


def debug() -> bool:
    return os.environ.get("FEATVIS_DEBUG", "") not in ("", "0", "false")


def quiet_library_warnings() -> None:
    """Silence the library warnings about training-time settings that do not apply here."""
    for noise in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=noise)


def job(cfg: DictConfig) -> None:
    """The body of one Hydra job: `mode=run` draws the layers, `mode=list` prints the model's modules.

    A listing writes no featvis results and opens no backends (no W&B run). A failed
    single run prints its one line and exits 1 here, before Hydra adds a line of its own;
    a failed multirun job returns after writing its result file, so the launcher runs the
    others and Hydra prints nothing: the sweep's process reports it at the end (main).
    """
    logging.captureWarnings(True)  # library warnings go to the job's log, not to stderr
    quiet_library_warnings()
    info = from_hydra()
    if info.sweep_dir is not None:
        outcome.started(info.sweep_dir)  # when OutputLock is not among the callbacks
        manifest.register(info.sweep_dir, info.num or 0, info.output_dir, info.overrides)  # the summary reads it
        if _done_before(info):
            return
    result, error = None, None
    try:
        config = validate(cfg)  # the one conversion: typed dataclasses from here on
        shards.check(config, multirun=info.sweep_dir is not None)
        if config.mode == Mode.list:
            from featvis.pipeline import listing  # noqa: PLC0415 - lazy: imports mmseg (~6 s), not needed for config errors

            print(listing.list_modules(config), flush=True)
        else:
            from featvis.pipeline import job as pipeline  # noqa: PLC0415 - lazy: imports mmseg (~6 s)

            key = output_folder.RUN_KEY if info.sweep_dir is None else output_folder.SWEEP_KEY
            with output_folder.hold(info.output_dir, key):  # already held by OutputLock in a single run
                result = pipeline.run(config, info)
    except BaseException as err:
        error = err
        result = getattr(err, "result", None)  # a job that skipped images still did the others
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: nothing to report here
            raise
        # kept in the job's own log file; with FEATVIS_DEBUG the traceback too, as remote
        # launchers (Ray, submitit) lose it on the way back to the sweep's process
        if isinstance(err, FittedOnlyError):  # not an error: a shard that waits for the others' fits
            log.info("featvis: %s", one_line(err))
        else:
            log.error("featvis: error: %s", one_line(err), exc_info=debug())
        if debug():
            raise
        if info.sweep_dir is not None:
            return  # the result file (below) says it failed; main reports it when the sweep ends
        print(f"featvis: error: {one_line(err)}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 1))
    finally:
        if info.sweep_dir is not None:  # every multirun job, ok or failed: read by featvis.sweep.summary
            _write_result(cfg, info, result, error)


def _done_before(info) -> bool:
    """A job of a sweep launched again (featvis.sweep.manifest.resume) that ended ok the first time: kept, not
    run again. Its result file says ok for this sweep and its results folder is there."""
    this = manifest.read(info.sweep_dir)
    if this is None or this.launches < 2:
        return False
    from featvis.sweep.results import RESULT_FILE  # noqa: PLC0415 - lazy: sweeps only (mmengine, ~2 s)

    try:
        record = json.loads((info.output_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return False
    if record.get("status") != "ok" or record.get("sweep_id") != this.id:
        return False
    if not (info.output_dir / RESULTS_DIR).is_dir():
        return False
    log.info("featvis: %s was drawn by an earlier launch of this sweep (%s): kept", info.name, info.output_dir)
    return True


def _write_result(cfg: DictConfig, info, result, error) -> None:
    """`<job dir>/featvis_result.json`; a failure to write it is logged, never hides the job's own error."""
    try:
        from featvis.sweep import results  # noqa: PLC0415 - lazy: only multirun jobs write one (mmengine, ~2 s)

        results.write_job_result(cfg, info, result, error, one_line(error) if error is not None else None)
    except Exception as err:  # pragma: no cover - disk full, permissions
        log.warning("could not write the job result file: %s", err)


CFG_OPTIONS = "model.cfg_options."


def plain_cfg_options(argv: List[str]) -> List[str]:
    """`model.cfg_options.<key>.<key>=value` as mmseg's --cfg-options takes it: Hydra wants a leading `+`
    for keys new to a dict, so such an override gets `++` (add, or replace a key a preset set)."""
    return [f"++{arg}" if arg.startswith(CFG_OPTIONS) and "=" in arg else arg for arg in argv]


def main(app: Callable[[], None]) -> None:
    """Run the Hydra app; turn any failure into one line on stderr and exit code 1."""
    sys.argv[1:] = shards.expand(plain_cfg_options(sys.argv[1:]))  # -m shards=N: also shard=range(0,N)
    register_configs()
    bounded.install()  # every config file Hydra reads: a regular file, within size and alias-expansion limits
    data_only.install()  # every composed config: no key may name code for Hydra to run (presets are data)
    confined.install()  # a job's log files: inside its output folder
    choices.install()  # --help lists the options a user can type, not the schema entries
    if not debug():
        os.environ["HYDRA_FULL_ERROR"] = "1"
    handle_termination()  # SIGTERM, SIGHUP: like Ctrl-C
    logging.captureWarnings(True)  # Hydra's callback warnings too: to the log, not to stderr
    logging.raiseExceptions = False  # a full disk must not print a logging traceback per log line
    try:
        app()
    except KeyboardInterrupt as interrupt:
        _stopped(interrupt)
    except BrokenPipeError:  # `python run.py --help | head`: the reader is gone, nothing to say (Python's recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except output_folder.Abort as abort:  # a busy or unwritable folder, found by a callback before the run
        _say(f"featvis: error: {one_line(abort.error)}")
        sys.exit(1)
    except Exception as err:
        if received() is not None:  # a stop signal whose exception something turned into another one
            _stopped(received())
        if debug():
            raise
        _say(f"featvis: error: {one_line(err)}")
        sys.exit(getattr(err, "exit_code", 1))
    if received() is not None:  # ... or swallowed on its way here
        _stopped(received())
    code = outcome.report(sys.stderr)  # a sweep: one line per job that did not end ok
    if code:
        sys.exit(code)


def _stopped(interrupt: KeyboardInterrupt) -> None:
    """Ctrl-C, SIGTERM or SIGHUP: one line saying where the results are, and the signal's exit code.

    A sweep's summary is written once more, saying after which job it was stopped and which
    jobs never ran (Hydra calls no callback of ours after an interrupted job).
    """
    sweep_dir = outcome.running()
    if sweep_dir is not None:
        _summarize_stopped(sweep_dir, describe(interrupt))
    _say(f"featvis: {describe(interrupt)}: {_partial()}")
    sys.exit(exit_code(interrupt))


def _summarize_stopped(sweep_dir, how: str) -> None:
    try:
        from featvis.sweep.summary import summarize  # noqa: PLC0415 - lazy: sweeps only

        if manifest.interrupted(sweep_dir, how) is not None:
            summarize(sweep_dir)
    except Exception as err:  # the exit code and the line above matter more
        log.warning("featvis: the summary of the stopped sweep was not written: %s", err)


def _say(line: str) -> None:
    """One line on stderr; a closed terminal (SIGHUP) is not a second error."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _partial() -> str:
    """Where an interrupted job left its results."""
    folder = output_folder.last()
    partial = folder / (RESULTS_DIR + ".partial") if folder is not None else None
    return f"partial results in {partial}" if partial is not None and partial.is_dir() else "no results written"


def one_line(err: BaseException) -> str:
    """A user-facing one-line description of `err` (featvis, Hydra and OmegaConf errors)."""
    if isinstance(err, FeatvisError):
        return _flat(str(err))
    if isinstance(err, KeyboardInterrupt):  # a multirun job's result file
        return describe(err)
    disk = output_folder.write_error_line(err)  # read-only, full: the folder and what to do
    if disk:
        return disk
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = getattr(cause, "full_key", "") or ""
        if key.startswith("hydra."):  # a launcher's or sweeper's option: they have no schema of ours
            return (f"unknown config key {key!r}: check its spelling, or add a key the option's schema "
                    f"lacks with a leading + (+{key}=...); `python run.py --cfg hydra` prints Hydra's keys")
        if key.startswith("model.cfg_options."):  # an empty dict of mmseg config keys: Hydra adds to it with +
            return (f"cannot set {key!r}: keys new to model.cfg_options take a leading +, e.g. "
                    "+model.cfg_options.model.test_cfg.mode=whole or '+model.cfg_options={model.test_cfg.mode: whole}'")
        return f"unknown config key {key!r}: check its spelling (`python run.py --cfg job` prints every key)"
    if isinstance(cause, ValidationError):
        msg = getattr(cause, "msg", str(cause)).splitlines()[0]
        return f"bad value for {getattr(cause, 'full_key', '')!r}: {msg}"
    if isinstance(err, MissingConfigException):
        first = str(err).strip().splitlines()[0]
        options = choices.typable(getattr(err, "options", None) or [])
        return f"{first}; available: {', '.join(options)}" if options else _flat(first)
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return _flat(str(err))
    hint = "" if debug() else " (set FEATVIS_DEBUG=1 for the traceback)"
    return f"unexpected {type(err).__name__}: {_flat(str(err))}{hint}"


def _flat(text: str) -> str:
    """Join a multi-line message into one line."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
