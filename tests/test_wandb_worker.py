"""The W&B run lives in a worker process: the job never imports wandb, a killed job's run is
still finished (failed), a dead worker is one error line, and one worker serves the process's jobs."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from featvis.backends.base import RunInfo
from featvis.backends.visualizer import FeatureVisualizer
from featvis.errors import BackendError
from featvis.render.panel import Panel
from tests.conftest import DEMO_IMAGE, ROOT, cli_env, compose_cfg, exit_code, history, wandb_records, wandb_runs

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
        "from tests.conftest import compose_cfg\n"
        f"job.run(compose_cfg('image={DEMO_IMAGE}'), JobInfo(output_dir=Path({str(tmp_path)!r})))\n"
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


def test_a_dead_worker_is_one_error_line(tmp_path):
    vis = _visualizer(tmp_path)
    with pytest.raises(BackendError) as caught:
        with vis:
            vis.start()
            vis.add_panels([Panel("input", _picture(0), "img0")], step=0, image_id="img0")
            worker = vis.backends["wandb"]._worker
            os.kill(worker._proc.pid, signal.SIGKILL)
            vis.add_panels([Panel("input", _picture(1), "img1")], step=1, image_id="img1")
    message = str(caught.value)
    assert "\n" not in message
    # raised at the next image's row if the job already saw the worker die, else when the backends close
    assert message.startswith(("the W&B worker process exited (code -9)",
                               "closing backends failed: wandb: the W&B worker process exited (code -9)"))
    assert "backends=[local]" in message


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
    from featvis.backends.wandb_worker import wanted_by

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
