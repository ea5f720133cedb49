"""A job's life as a process: one job per folder, signals, a sweep's exit code, disks that refuse writes,
and stderr that holds featvis's one line and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from featvis.config import output_folder
from featvis.errors import SkippedImagesError
from featvis.signals import Terminated, handle_termination, reset
from featvis.sweep import outcome
from featvis.sweep.results import RESULT_FILE, JobRecord
from tests.helpers import (
    CONF,
    DEMO_IMAGE,
    ROOT,
    WAIT_S,
    cli_env,
    exit_code,
    history,
    job_config,
    run_cli,
    wandb_records,
    wandb_runs,
)
from tests.helpers import demo_copies as _copies
from tests.helpers import start_cli as _start
from tests.helpers import wait_for as _wait_for


def _lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def _truncated() -> bytes:
    """The demo scene cut in half: its header reads, its pixels do not (libpng says `Read Error` on stderr)."""
    data = DEMO_IMAGE.read_bytes()
    return data[: len(data) // 2]


# --------------------------------------------------------------------------- one job per folder (case 3)

def test_a_second_job_into_a_busy_folder_fails_at_once_and_the_first_keeps_its_own_results(tmp_path):
    out = tmp_path / "X"
    first = _start(f"image={_copies(tmp_path / 'a', 40)}", f"hydra.run.dir={out}")
    lock = out / output_folder.LOCK_FILE
    _wait_for(first, lambda: lock.is_file() and f"pid={first.pid}" in lock.read_text(), "the lock")

    # The first job is paused while it holds the folder, so that the second meets it busy
    # however fast the first would have finished (a 2-core CI machine runs 40 small images
    # in less time than the second job takes to start).
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = run_cli(f"image={_copies(tmp_path / 'b', 2, prefix='other')}", "backends=[local]",
                         f"hydra.run.dir={out}")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 1
    assert _lines(second.stderr) == [f"featvis: error: {out} is in use by featvis job PID {first.pid}: "
                                     "wait for it or pass hydra.run.dir=<another folder>"]

    _, err = first.communicate(timeout=WAIT_S)
    assert first.returncode == 0, err
    assert sorted(p.name for p in (out / "featvis" / "local").iterdir() if p.is_dir()) == [
        f"img_{i:03d}" for i in range(40)]
    overrides = (out / ".hydra" / "overrides.yaml").read_text()  # the second wrote none of Hydra's files
    assert str(tmp_path / "a") in overrides and str(tmp_path / "b") not in overrides
    assert "other_" not in (out / "run.log").read_text()
    (run_dir,) = wandb_runs(out)
    records = wandb_records(run_dir)
    assert len(history(records)) == 40 and exit_code(records) == 0


def _hold_in_another_process(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from featvis.config import output_folder as f; "
            "f.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_partial_folder_is_stale_only_when_its_owner_is_gone(tmp_path):
    from featvis.config.job import JobInfo
    from featvis.pipeline import job as pipeline

    (tmp_path / "featvis.partial").mkdir()
    (tmp_path / "featvis.partial" / "theirs.txt").write_text("a running job's")
    owner = _hold_in_another_process(tmp_path)
    cfg = job_config(f"image={DEMO_IMAGE}", "backends=[local]", "layers.names=[decode_head.conv_seg]")
    try:
        with pytest.raises(output_folder.FolderBusyError, match=f"in use by featvis job PID {owner.pid}"):
            pipeline.run(cfg, JobInfo(output_dir=tmp_path))
        assert (tmp_path / "featvis.partial" / "theirs.txt").is_file()
        assert not (tmp_path / "featvis").exists()
    finally:
        owner.kill()
        owner.wait()
    # the owner is gone (killed: the kernel let go of its lock): its partial folder is stale
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path))
    assert result.images == ["scene_000"]
    assert not (tmp_path / "featvis.partial").exists() and not (tmp_path / "featvis" / "theirs.txt").exists()


def test_holding_is_reentrant_within_a_process(tmp_path):
    with output_folder.hold(tmp_path):
        with output_folder.hold(tmp_path):  # featvis.cli and the pipeline both hold the run folder
            pass
        probe = subprocess.run([sys.executable, "-c", "import sys; from featvis.config import output_folder as f;"
                                "f.acquire(sys.argv[1])", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert probe.returncode == 1 and f"in use by featvis job PID {os.getpid()}" in probe.stderr
    assert output_folder.acquire(tmp_path) == tmp_path  # let go of by the outer hold
    output_folder.release(tmp_path)


def test_default_run_folders_of_jobs_started_in_the_same_second_differ():
    folders = []
    for _ in range(2):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("config", return_hydra_config=True)
        folders.append(OmegaConf.select(cfg, "hydra.run.dir"))
        assert folders[-1].startswith("outputs/")
    assert folders[0] != folders[1]


# --------------------------------------------------------------------------- signals (case 4)

def test_sigterm_leaves_partial_results_and_a_failed_wandb_run(tmp_path):
    out = tmp_path / "X"
    job = _start(f"image={_copies(tmp_path / 'images', 60)}", f"hydra.run.dir={out}")
    partial = out / "featvis.partial"
    _wait_for(job, lambda: any((partial / "local").glob("*/prediction.png")), "the first picture")
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=WAIT_S)

    assert job.returncode == 143
    assert _lines(err) == [f"featvis: terminated (SIGTERM): partial results in {partial}"]
    assert not (out / "featvis").exists()
    drawn = [p for p in (partial / "local").iterdir() if p.is_dir()]
    assert 1 <= len(drawn) < 60
    (run_dir,) = wandb_runs(partial)
    records = wandb_records(run_dir)
    assert exit_code(records) != 0  # finished, and marked failed
    assert 1 <= len(history(records)) < 60


def test_sighup_raises_terminated_once():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        handle_termination()
        with pytest.raises(Terminated) as caught:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)  # the handler runs at the next bytecode: never reached
        assert caught.value.exit_code == 129 and str(caught.value) == "terminated (SIGHUP)"
        assert isinstance(caught.value, KeyboardInterrupt)  # unwinds exactly like Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not cut the clean-up short
    finally:
        reset()  # its watchdog would end this process
        for signum, handler in previous.items():
            signal.signal(signum, handler)


SWALLOWS = """
import time
from featvis.signals import handle_termination
handle_termination()
ready = False
while True:  # code that catches everything, as C code clearing errors does: the exception is lost
    try:
        if not ready:
            ready = True
            print("ready", flush=True)
        time.sleep(0.01)
    except BaseException:
        pass
"""


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_a_stop_signal_ends_the_process_even_when_its_exception_is_swallowed(signum, code, said):
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**cli_env(), "FEATVIS_STOP_GRACE": "1"})
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert time.monotonic() - start < 15
    assert _lines(err) == [f"featvis: {said}: clean-up did not end within 1 s of the signal; stopped"]


def test_a_second_ctrl_c_ends_the_process_at_once():
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**cli_env(), "FEATVIS_STOP_GRACE": "600"})
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert _lines(err) == ["featvis: interrupted: stopped at once by a second Ctrl-C"]


# --------------------------------------------------------------------------- a sweep's exit code (case 7)

def test_a_sweep_with_failed_jobs_exits_1_with_one_line_per_job(tmp_path):
    images = _copies(tmp_path / "images", 1)
    (images / "broken.png").write_bytes(_truncated())  # truncated: skipped, not fatal
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers.names=[decode_head.conv_seg],[decode_head.nosuch]", f"image={DEMO_IMAGE},{images}",
                   "backends=[local]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1  # not 3: jobs failed, not only images skipped
    lines = _lines(proc.stderr)
    assert len(lines) == 3, proc.stderr  # jobs 1 (images skipped), 2 and 3 (failed); nothing from Hydra
    assert lines[0].startswith("featvis: error: job 1 (") and "1 image(s) skipped, first broken.png" in lines[0]
    for line, num in zip(lines[1:], (2, 3)):
        assert line.startswith(f"featvis: error: job {num} (") and "layers.names=[decode_head.nosuch]" in line
        assert "layer 'decode_head.nosuch' matches no module" in line
    assert "libpng" not in proc.stderr and "Error executing job" not in proc.stderr
    summary = json.loads((sweep / "summary" / "summary.json").read_text())  # on_multirun_end ran too
    assert summary["counts"] == {"ok": 1, "skipped-images": 1, "failed": 2}


def _record(sweep: Path, num: int, status: str) -> None:
    job_dir = sweep / str(num)
    job_dir.mkdir(parents=True)
    error = None if status == "ok" else f"problem of job {num}"
    record = JobRecord(dir=job_dir, num=num, name=f"layers=l{num}", status=status, error=error,
                       exit_code={"ok": 0, "failed": 1}.get(status, SkippedImagesError.exit_code))
    (job_dir / RESULT_FILE).write_text(json.dumps(record.to_json()))


@pytest.mark.parametrize("statuses, code", [(["ok", "ok"], 0), (["ok", "skipped-images"], 3),
                                            (["skipped-images", "failed", "ok"], 1)])
def test_a_sweeps_exit_code_tells_failed_jobs_from_skipped_images(tmp_path, capsys, monkeypatch, statuses, code):
    monkeypatch.setattr(outcome, "_sweep", None)
    old = tmp_path / "0"  # an earlier sweep's failed job in the same folder: not this sweep's
    _record(tmp_path, 0, "failed")
    os.utime(old / RESULT_FILE, (time.time() - 3600, time.time() - 3600))
    outcome.started(tmp_path)
    for num, status in enumerate(statuses, start=1):
        _record(tmp_path, num, status)
    assert outcome.report(sys.stderr) == code
    lines = _lines(capsys.readouterr().err)
    assert lines == [f"featvis: error: job {num} (layers=l{num}): problem of job {num}"
                     for num, status in enumerate(statuses, start=1) if status != "ok"]


# --------------------------------------------------------------------------- stderr holds one line (case 10)

def test_a_truncated_png_says_one_line_and_libpng_goes_to_the_log(tmp_path):
    images = _copies(tmp_path / "images", 1)
    (images / "truncated.png").write_bytes(_truncated())
    out = tmp_path / "X"
    proc = run_cli(f"image={images}", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == SkippedImagesError.exit_code
    assert len(_lines(proc.stderr)) == 1 and "truncated.png" in proc.stderr, proc.stderr
    assert "libpng" not in proc.stderr
    assert "libpng error: Read Error" in (out / "run.log").read_text()  # kept, where library chatter goes


# --------------------------------------------------------------------------- disks that refuse writes (case 11)

def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount not permitted here: {proc.stderr.strip()}")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only bind mount (chmod stops no write of root's)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    _mount("--bind", str(folder), str(folder))
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        with pytest.raises(OSError):
            (folder / "probe").write_text("")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: room for Hydra's files, not for the pictures."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("sub", ["", "out"])  # the read-only folder itself; a folder to create in it
def test_a_read_only_output_folder_says_so_in_one_line(read_only, sub):
    out = read_only / sub if sub else read_only
    proc = run_cli(f"image={DEMO_IMAGE}", f"hydra.run.dir={out}")
    assert proc.returncode == 1
    assert _lines(proc.stderr) == [f"featvis: error: cannot write to {out}: read-only file system; "
                                   "pass hydra.run.dir=<another folder>"]


def test_a_full_disk_says_so_in_one_line(tiny_disk):
    out = tiny_disk / "out"
    proc = run_cli(f"image={DEMO_IMAGE}", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 1
    assert _lines(proc.stderr) == [f"featvis: error: cannot write to {out}: no space left on device; "
                                   "free space or pass hydra.run.dir=<another folder>"]
    assert not (out / "featvis").exists()


def test_write_errors_name_the_folder_and_reading_errors_are_not_write_errors(tmp_path):
    import errno

    with output_folder.hold(tmp_path):
        full = OSError(errno.ENOSPC, "No space left on device")  # a write() error carries no file name
        assert output_folder.write_error_line(ValueError("Unable to configure handler 'file'")) is None
        wrapped = ValueError("Unable to configure handler 'file'")
        wrapped.__cause__ = full
        assert output_folder.write_error_line(wrapped) == (
            f"cannot write to {tmp_path}: no space left on device; free space or pass hydra.run.dir=<another folder>")
        denied_elsewhere = PermissionError(errno.EACCES, "Permission denied", "/root/model.pth")
        assert output_folder.write_error_line(denied_elsewhere) is None
        denied_here = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run.log"))
        assert output_folder.write_error_line(denied_here).startswith(f"cannot write to {tmp_path}: permission")
