"""wandb's own files (its service's log, the staged files of the run's table, its temporaries) go to
the job's `.wandb-internal/` folder, never to the home folder, the user's cache or the temporary folder."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from featvis.backends import wandb_pool
from featvis.backends.base import RunInfo
from featvis.backends.visualizer import FeatureVisualizer
from featvis.backends.wandb import FILES_DIR
from featvis.render.panel import Panel
from tests.helpers import ROOT, cli_env, compose_cfg, run_cli, wandb_records, wandb_runs

WAIT_S = 300  # how long to wait for a process to end: generous, never a timing assertion


def _places(tmp_path):
    """Fresh, empty folders for HOME, XDG_CACHE_HOME and TMPDIR."""
    places = {var: tmp_path / name for var, name in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("TMPDIR", "tmp"))}
    for folder in places.values():
        folder.mkdir()
    return places


def _wandb_paths(places):
    """Everything under those folders whose path names wandb (its logs, staging, media temporaries, socket)."""
    return [p for folder in places.values() for p in folder.rglob("*") if "wandb" in str(p.relative_to(folder)).lower()]


def _staged(records):
    """The files the run's artifacts (its featvis/table) name by absolute path, for `wandb sync` to upload."""
    return [Path(entry["local_path"]) for r in records if r.get("type") == "artifact"
            for entry in r["artifact"]["manifest"]["contents"]]


def _core_logs(folder):
    return [p for p in (folder / "cache").rglob("core-debug-*.log") if p.stat().st_size > 0]


def test_a_job_leaves_wandbs_files_in_its_folder_and_none_in_home_cache_or_tmp(tmp_path):
    places = _places(tmp_path)
    out = tmp_path / "job"
    proc = run_cli(f"hydra.run.dir={out}", **{var: str(folder) for var, folder in places.items()})
    assert proc.returncode == 0, proc.stderr

    assert _wandb_paths(places) == []
    assert list(places["TMPDIR"].iterdir()) == []  # the job's temporaries, wandb's among them, are gone
    (run,) = wandb_runs(out / "featvis")
    assert (run / "logs" / "debug-core.log").stat().st_size > 0
    internal = out / FILES_DIR
    assert _core_logs(internal)  # the service's log
    staged = _staged(wandb_records(run))
    assert staged and all(p.is_file() and internal in p.parents for p in staged)  # still there after the rename
    assert not (internal / "tmp").exists()  # emptied, then removed, when the worker ended


def _job(save_dir, name):
    """A job's W&B backend alone, with one image (input and a map, so the run has a table to stage)."""
    backends = {k: dict(v) for k, v in compose_cfg("backends=[wandb]").backends.items()}
    vis = FeatureVisualizer(backends, save_dir, RunInfo(name=name, job_type="t", group=None))
    with vis:
        vis.start()
        worker = vis.backends["wandb"]._worker
        picture = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        vis.add_panels([Panel("input", picture, "img0"), Panel("featmap/a", picture, "a", layer="a")],
                       step=0, image_id="img0")
    return worker


def test_a_reused_worker_keeps_its_service_files_in_its_first_jobs_folder_and_each_runs_in_its_own(
        tmp_path, monkeypatch):
    places = _places(tmp_path)
    before = {var: os.environ.get(var) for var in places}
    for var, folder in places.items():
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # another environment: no idle worker fits, a new one
    jobs = [tmp_path / "sweep" / str(i) for i in range(2)]
    workers = [_job(job / "featvis.partial", f"job{i}") for i, job in enumerate(jobs)]
    assert workers[0] is workers[1]

    assert not (jobs[1] / FILES_DIR / "cache").exists()
    with wandb_pool._IDLE_LOCK:
        wandb_pool._IDLE.remove(workers[0])
    workers[0].quit()
    workers[0]._proc.wait(timeout=WAIT_S)
    assert workers[0]._proc.returncode == 0
    # the service writes its log as it likes while it runs (CI once found it still empty): look once it ended
    assert _core_logs(jobs[0] / FILES_DIR) and not (jobs[1] / FILES_DIR / "cache").exists()
    assert _wandb_paths(places) == [] and list(places["TMPDIR"].iterdir()) == []
    assert not (jobs[0] / FILES_DIR / "tmp").exists()

    for var, value in before.items():  # `wandb leet` below writes a log of its own in TMPDIR
        if value is None:
            monkeypatch.delenv(var)
        else:
            monkeypatch.setenv(var, value)
    for job in jobs:
        (run,) = wandb_runs(job / "featvis.partial")
        staged = _staged(wandb_records(run))
        assert staged and all(p.is_file() and job / FILES_DIR in p.parents for p in staged)


def test_a_worker_started_after_this_process_opened_a_wandb_run_starts_its_own_service(tmp_path, monkeypatch):
    """wandb keeps the address of a service this process started in WANDB_SERVICE (the sweep summary's run
    does); a worker that inherited it logged through that service, whose files are in ~/.cache and /tmp."""
    places = _places(tmp_path)
    for var, folder in places.items():
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # a new worker
    monkeypatch.setenv("WANDB_SERVICE", "3-1-unix-/nonexistent/wandb.sock")  # as wandb leaves it
    job = tmp_path / "job"
    worker = _job(job / "featvis.partial", "job")
    with wandb_pool._IDLE_LOCK:
        wandb_pool._IDLE.remove(worker)
    worker.quit()
    worker._proc.wait(timeout=WAIT_S)
    assert worker._proc.returncode == 0
    assert _core_logs(job / FILES_DIR)  # its own service, in the job's folder
    assert _wandb_paths(places) == []


def test_the_worker_imports_wandb_without_writing_in_the_temporary_folder(tmp_path):
    """wandb makes two temporary folders when imported, before the worker knows the job's folder;
    the worker's import makes them only when they are first used (an import alone: never)."""
    probe = ("import os, sys\n"
             "from featvis.backends.wandb_child import _made_on_use\n"
             "if sys.argv[1] == 'worker':\n"
             "    with _made_on_use():\n"
             "        import wandb\n"
             "else:\n"
             "    import wandb\n"
             "print(len(os.listdir(os.environ['TMPDIR'])))\n")
    made = {}
    for how in ("plain", "worker"):
        tmp = tmp_path / how
        tmp.mkdir()
        proc = subprocess.run([sys.executable, "-c", probe, how], cwd=ROOT, env=cli_env(TMPDIR=str(tmp)),
                              capture_output=True, text=True, timeout=WAIT_S)
        assert proc.returncode == 0, proc.stderr[-2000:]
        made[how] = int(proc.stdout.split()[-1])
    assert made == {"plain": 2, "worker": 0}  # wandb-media and wandb-artifacts, made at import by a plain import


def test_a_job_after_the_first_jobs_folder_was_deleted_gets_a_new_worker(tmp_path, monkeypatch):
    """wandb's service lives in the first job's .wandb-internal/: a script that deletes that job's (temporary)
    folder must not hand the next job a worker whose service lost its socket ('No such file or directory')."""
    import shutil

    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # another environment: workers of this test only
    first = _job(tmp_path / "a" / "featvis.partial", "a")
    shutil.rmtree(tmp_path / "a")
    second = _job(tmp_path / "b" / "featvis.partial", "b")  # raised BackendError before
    assert second is not first and second.home == tmp_path / "b" / FILES_DIR
    (run,) = wandb_runs(tmp_path / "b" / "featvis.partial")
    assert _staged(wandb_records(run))
