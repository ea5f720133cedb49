"""A sweep folder holds one sweep (featvis.sweep.manifest): system folders and used folders are refused
before any job runs, the summary reads exactly the sweep's own jobs, and an interrupted sweep says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from featvis.sweep import manifest
from featvis.sweep.results import RESULT_FILE, load_results
from tests.helpers import DEMO_IMAGE, ROOT, WAIT_S, cli_env, error_line, run_cli
from tests.helpers import demo_copies as _copies
from tests.helpers import start_cli as _start
from tests.helpers import wait_for as _wait_for

FAST = ("backends=[local]", f"image={DEMO_IMAGE}", "layers.names=[decode_head.conv_seg]")


@pytest.mark.parametrize("folder", ["/", "/etc", "/usr/share", "{home}", "{home}/.."])
def test_a_system_folder_is_refused_and_nothing_is_written_there(tmp_path, folder):
    home = tmp_path / "home"
    home.mkdir()
    sweep_dir = folder.format(home=home)
    before = _featvis_entries(sweep_dir)
    proc = run_cli("-m", *FAST, "layers=decoder,backbone", f"hydra.sweep.dir={sweep_dir}", HOME=str(home))
    line = error_line(proc)
    assert f"hydra.sweep.dir={sweep_dir}" in line and "is a system folder or the home folder" in line
    assert _featvis_entries(sweep_dir) == before  # no /0, /multirun.yaml, /summary, /.featvis.lock


def _featvis_entries(folder: str) -> set:
    """What a job or sweep would write into `folder` (libraries' caches in a fresh home folder aside)."""
    return {e for e in os.listdir(folder) if e in {"0", "1", "multirun.yaml", "summary", ".featvis.lock", ".hydra",
                                                   "featvis", "featvis.partial", "featvis_sweep.json"}}


def test_a_single_run_into_the_home_folder_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    line = error_line(run_cli(*FAST, f"hydra.run.dir={home}", HOME=str(home)))
    assert f"hydra.run.dir={home} is a system folder or the home folder" in line
    assert _featvis_entries(str(home)) == set()


def test_a_folder_holding_an_earlier_sweep_is_refused_before_any_job_runs(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("old: sweep\n")
    (sweep / "0" / RESULT_FILE).write_text(json.dumps({"name": "old", "status": "ok"}))
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    line = error_line(run_cli("-m", *FAST, "layers=decoder", f"hydra.sweep.dir={sweep}"))
    assert f"hydra.sweep.dir={sweep} already holds an earlier sweep (0, multirun.yaml)" in line
    assert "pass a new folder" in line
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before  # not even a lock file
    assert (sweep / "multirun.yaml").read_text() == "old: sweep\n"


def test_a_folder_holding_other_files_is_refused(tmp_path):
    sweep = tmp_path / "notes"
    sweep.mkdir()
    (sweep / "thesis.tex").write_text("keep")
    line = error_line(run_cli("-m", *FAST, "layers=decoder", f"hydra.sweep.dir={sweep}"))
    assert "already holds 1 entries (thesis.tex)" in line
    assert os.listdir(sweep) == ["thesis.tex"]


def test_an_empty_folder_is_fine_and_the_summary_reads_only_this_sweeps_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()  # made beforehand, empty: fine
    proc = run_cli("-m", *FAST, "reduction=select_max,squeeze_mean", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    this = manifest.read(sweep)
    assert this is not None and [job[-1] for job in this.jobs] == ["reduction=select_max", "reduction=squeeze_mean"]
    assert [n for n, _ in manifest.job_dirs(sweep)] == [0, 1]
    # result files the sweep never made: deeper down, and a folder of another sweep beside its jobs
    stray = json.loads((sweep / "0" / RESULT_FILE).read_text())
    (sweep / "0" / "nested").mkdir()
    (sweep / "0" / "nested" / RESULT_FILE).write_text(json.dumps({**stray, "name": "nested"}))
    (sweep / "9").mkdir()
    (sweep / "9" / RESULT_FILE).write_text(json.dumps({**stray, "name": "other", "num": 9, "sweep_id": "x"}))
    (sweep / manifest.JOBS / "9.json").write_text(json.dumps({"num": 9, "dir": "9", "overrides": []}))
    assert [r.name for r in load_results(sweep)] == ["reduction=select_max", "reduction=squeeze_mean"]
    again = subprocess.run([sys.executable, "-m", "featvis.sweep.summary", str(sweep)], cwd=ROOT, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("2 job(s) summarized"), again.stderr
    data = json.loads((sweep / "summary" / "summary.json").read_text())
    assert [j["name"] for j in data["jobs"]] == ["reduction=select_max", "reduction=squeeze_mean"]
    assert data["planned"] == 2 and data["never_ran"] == [] and data["stopped"] is None
    assert "2 jobs: 2 ok." in (sweep / "summary" / "index.html").read_text()


@pytest.mark.parametrize("signum, code, how", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_an_interrupted_sweep_says_after_which_job_and_lists_the_jobs_that_never_ran(tmp_path, signum, code, how):
    images = _copies(tmp_path / "images", 40)
    sweep = tmp_path / "sweep"
    job = _start("-m", "backends=[local]", f"image={images}", "layers.names=[decode_head.conv_seg]",
                 "reduction=select_max,squeeze_mean,l2_norm,std", f"hydra.sweep.dir={sweep}")
    _wait_for(job, lambda: any((sweep / "1").glob("featvis.partial/local/*/prediction.png")), "job 2's first picture")
    job.send_signal(signum)
    _, err = job.communicate(timeout=WAIT_S)
    assert job.returncode == code, err
    assert err.strip().splitlines()[-1].startswith(f"featvis: {how}: ")
    data = json.loads((sweep / "summary" / "summary.json").read_text())
    assert [(j["num"], j["status"]) for j in data["jobs"]] == [(0, "ok"), (1, "interrupted")]
    assert data["stopped"] == f"{how} after job 2 of 4: 2 job(s) never ran"
    assert [(j["num"], j["name"], j["overrides"][-1]) for j in data["never_ran"]] == [
        (2, "reduction=l2_norm", "reduction=l2_norm"), (3, "reduction=std", "reduction=std")]
    page = (sweep / "summary" / "index.html").read_text()
    assert f"The sweep was {how} after job 2 of 4: 2 job(s) never ran." in page
    assert "4 jobs: 1 interrupted, 2 never ran, 1 ok." in page
    assert page.count("never ran</td>") == 2 and "reduction=std" in page
    assert not (sweep / "2").exists()
