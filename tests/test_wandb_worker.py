"""The W&B run lives in a worker process: the job never imports wandb, a killed job's run is
still finished (failed), a dead worker stops the job at its next image in one error line, and
one worker serves the process's jobs (where wandb's files go: tests/test_wandb_files.py)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featvis.backends.base import RunInfo
from featvis.backends.visualizer import FeatureVisualizer
from featvis.errors import BackendError
from featvis.render.panel import Panel
from tests.helpers import (
    DEMO_IMAGE,
    ROOT,
    cli_env,
    compose_cfg,
    error_line,
    exit_code,
    history,
    wandb_records,
    wandb_runs,
)

WAIT_S = 300  # how long to wait for a process to reach a state: generous, never a timing assertion


def _visualizer(tmp_path, name="t"):
    backends = {k: dict(v) for k, v in compose_cfg("backends=[wandb]").backends.items()}
    return FeatureVisualizer(backends, tmp_path, RunInfo(name=name, job_type="t", group=None))


def _picture(seed):
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_a_job_never_imports_wandb_itself(tmp_path):
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from featvis.config.job import JobInfo\n"
        "from featvis.pipeline import job\n"
        "from tests.helpers import job_config\n"
        f"job.run(job_config('image={DEMO_IMAGE}'), JobInfo(output_dir=Path({str(tmp_path)!r})))\n"
        "print('wandb imported:', 'wandb' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wandb imported: False" in proc.stdout
    (run,) = wandb_runs(tmp_path / "featvis")
    assert len(history(wandb_records(run))) == 1  # and the run, made by the worker, has the image


def test_a_killed_job_leaves_its_wandb_run_finished_and_failed(tmp_path):
    """SIGKILL gives the job no chance to clean up; its worker sees its pipe close and finishes the run."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(60):
        (images / f"img_{i:03d}.png").write_bytes(DEMO_IMAGE.read_bytes())
    out = tmp_path / "X"
    job = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"image={images}", f"hydra.run.dir={out}"],
                           cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "featvis.partial"
    deadline = time.monotonic() + WAIT_S
    while len(list((partial / "local").glob("*/prediction.png"))) < 3:
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before its third picture"
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=WAIT_S)

    deadline = time.monotonic() + WAIT_S
    while True:  # the worker finishes the run on its own, after the job is gone
        runs = wandb_runs(partial)
        try:
            records = wandb_records(runs[0]) if runs else []
        except subprocess.CalledProcessError:  # read while being written
            records = []
        if any(r.get("type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, "the W&B run was never finished"
        time.sleep(0.5)
    assert exit_code(records) == 1
    assert 1 <= len(history(records)) < 60


def _dead(pid):
    """Whether process `pid` has ended: every thread of it (a killed process's main thread is a zombie
    while its other threads still exit: its files are not closed yet), or it is gone (reaped)."""
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):  # none: reaped
        try:
            if task.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        except (FileNotFoundError, ProcessLookupError):  # that thread just ended
            continue
    return True


def _kill_and_wait(pid):
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while not _dead(pid):
        assert time.monotonic() < deadline, "the killed process never ended"
        time.sleep(0.01)


def test_a_dead_worker_fails_the_next_image_in_one_line(tmp_path):
    vis = _visualizer(tmp_path)
    reached = []
    with pytest.raises(BackendError) as caught:
        with vis:
            vis.start()
            vis.backends["wandb"]._check_open(wait=True)  # the run is open: its opening cannot tell
            vis.add_panels([Panel("input", _picture(0), "img0")], step=0, image_id="img0")
            _kill_and_wait(vis.backends["wandb"]._worker._proc.pid)
            reached.append("img1")
            vis.add_panels([Panel("input", _picture(1), "img1")], step=1, image_id="img1")
            reached.append("after img1")
    assert reached == ["img1"]  # raised by the next image's pictures, not when the backends close
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the W&B worker process exited (code -9)")
    assert "backends=[local]" in message


def _children(pid):
    """The PIDs of process `pid`'s children whose command line names `what`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"featvis.backends.wandb_child" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _complete_png(path):
    with Image.open(path) as image:
        image.verify()  # every chunk's CRC, up to IEND: a truncated file fails
    with Image.open(path) as image:
        image.load()
    return True


def test_a_job_whose_worker_is_killed_fails_at_its_next_image_with_its_pictures_complete(tmp_path):
    """The worker is SIGKILLed while the job is stopped, after its first images: when the job goes on,
    it fails at the next image it hands to the backends (it used to draw all 40, then fail at close),
    with one error line; the local pictures of every image it drew are complete, and stay partial."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        (images / f"img_{i:03d}.png").write_bytes(DEMO_IMAGE.read_bytes())
    out = tmp_path / "X"
    local = out / "featvis.partial" / "local"
    job = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"image={images}", f"hydra.run.dir={out}"],
                           cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while len([p for p in local.glob("img_*") if p.is_dir()]) < 2:  # the first image went to every backend
            assert job.poll() is None and time.monotonic() < deadline, "the job ended before its second image"
            time.sleep(0.05)
        job.send_signal(signal.SIGSTOP)
        (worker,) = _children(job.pid)
        drawn_before = len([p for p in local.glob("img_*") if p.is_dir()])
        _kill_and_wait(worker)  # dead before the job can look again
    finally:
        job.send_signal(signal.SIGCONT)
    stdout, stderr = job.communicate(timeout=WAIT_S)

    line = error_line(subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr))
    assert line.startswith("featvis: error: the W&B worker process exited (code -9)"), line
    assert "backends=[local]" in line
    drawn = sorted(p for p in local.glob("img_*") if p.is_dir())
    # the images handed to the backends before the job looked again, at most one more: not the other 40
    assert drawn_before <= len(drawn) <= drawn_before + 1, (drawn_before, len(drawn))
    files = {image.name: sorted(str(f.relative_to(image)) for f in image.rglob("*.png")) for image in drawn}
    logged = dict(re.findall(r"\] (img_\d+): (\d+) pictures", (out / "run.log").read_text()))
    assert logged and set(logged) <= set(files)
    for name, pictures in files.items():
        assert pictures == files[drawn[0].name] and "input.png" in pictures  # every picture of every image
        assert name not in logged or len(pictures) == int(logged[name])
        assert all(_complete_png(drawn[0].parent / name / picture) for picture in pictures)
    assert not (out / "featvis").exists()  # the job stays marked partial


def test_one_worker_serves_the_jobs_of_a_process_each_with_its_own_run(tmp_path):
    pids = []
    for job in range(2):
        vis = _visualizer(tmp_path / str(job), name=f"job{job}")
        with vis:
            vis.start()
            pids.append(vis.backends["wandb"]._worker._proc.pid)
            for step in range(job + 1):
                vis.add_panels([Panel("input", _picture(step), f"img{step}")], step=step, image_id=f"img{step}")
    assert pids[0] == pids[1]
    for job in range(2):
        (run,) = wandb_runs(tmp_path / str(job))
        records = wandb_records(run)
        assert exit_code(records) == 0 and len(history(records)) == job + 1


@pytest.mark.parametrize("argv, wanted", [
    ([], True),
    (["model=ann", "layers=backbone", "image=street.png"], True),
    (["-m", "backends=[local],[local,wandb]"], True),
    (["backends=[local,wandb]", "wandb.mode=offline"], True),
    (["--help"], False), (["--cfg", "job"], False), (["--cfg=job"], False), (["--info"], False),
    (["mode=list"], False),
    (["backends=[local]"], False), (["+backends=[tensorboard]"], False), (["~backends.wandb"], False),
    (["wandb.mode=disabled"], False),
])
def test_run_py_prewarms_the_worker_only_when_the_command_line_will_open_a_run(argv, wanted):
    from featvis.backends.wandb_pool import wanted_by

    assert wanted_by(argv) is wanted


def test_run_py_starts_the_worker_before_it_imports_torch(tmp_path):
    """The worker is running (and importing wandb) while run.py's process is still importing
    featvis.cli: torch and mmseg. Seen from inside: featvis.cli's import finds a worker already
    alive; and the job then reuses it (one worker process in all)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import runpy, sys\n"
        "import featvis.backends.wandb_worker as ww\n"
        "real = ww.WandbProcess.__init__\n"
        "started = []\n"
        "def spy(self, *a, **k):\n"
        "    started.append('torch' in sys.modules)\n"
        "    real(self, *a, **k)\n"
        "ww.WandbProcess.__init__ = spy\n"
        "import atexit\n"
        "atexit.register(lambda: print('workers started (torch imported then):', started, flush=True))\n"
        f"sys.argv = ['run.py', 'image={DEMO_IMAGE}', 'gt_mask=null', 'layers.names=[decode_head.conv_seg]', "
        f"'wandb.mode=offline', 'hydra.run.dir={tmp_path / 'job'}']\n"
        "runpy.run_path('run.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(probe)], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workers started (torch imported then): [False]" in proc.stdout
    (run,) = wandb_runs(tmp_path / "job")
    assert len(history(wandb_records(run))) == 1


def test_wandbs_service_port_file_poll_sleeps_through_the_function_the_worker_shortens():
    """wandb_child.quick_service_start replaces `_SLEEP`: the poll must still call it, by that name."""
    import inspect

    from wandb.sdk.lib.service import service_port_file

    assert service_port_file._SLEEP is time.sleep  # patched in the worker process only
    assert "_SLEEP(" in inspect.getsource(service_port_file.poll_for_token)
