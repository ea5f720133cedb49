"""Multirun sweeps: job result files, the sweep summary (contact sheets, index, W&B run) and launchers."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.backends.local import panel_file
from featvis.data.paths import ASSETS
from featvis.sweep.results import NO_PICTURES, RESULT_FILE, JobRecord, load_results
from featvis.sweep.sheets import BAND, GAP, TILE_H
from featvis.sweep.summary import summarize
from tests.helpers import DEMO_IMAGE, history, run_cli, run_record, wandb_records, wandb_runs

CHECKPOINT = ASSETS / "checkpoints" / "demo_pspnet.pth"


def _sweep_2x2(tmp_path: Path, *extra: str):
    b = tmp_path / "b.pth"
    shutil.copy(CHECKPOINT, b)
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers=decoder,backbone", f"model.checkpoint=featvis::checkpoints/demo_pspnet.pth,{b}",
                   f"image={DEMO_IMAGE}", "backends=[local,wandb]", *extra, f"hydra.sweep.dir={sweep}")
    return proc, sweep


EXPECTED_NAMES = sorted(f"layers={layers},model.checkpoint={ckpt}"
                        for layers in ("decoder", "backbone") for ckpt in ("demo_pspnet.pth", "b.pth"))


def _job_runs(sweep: Path):
    """(job runs, summary runs): run records of the sweep's offline W&B runs."""
    records = [(d, wandb_records(d)) for d in wandb_runs(sweep)]
    jobs = [(d, r) for d, r in records if run_record(r)["job_type"] != "summary"]
    summaries = [(d, r) for d, r in records if run_record(r)["job_type"] == "summary"]
    return jobs, summaries


def _assert_four_runs_in_one_group(sweep: Path):
    jobs, summaries = _job_runs(sweep)
    runs = [run_record(r) for _, r in jobs]
    assert sorted(r["display_name"] for r in runs) == EXPECTED_NAMES
    assert len({r["run_group"] for r in runs}) == 1 and runs[0]["run_group"].startswith("sweep-")
    assert {r["job_type"] for r in runs} == {"layers,model.checkpoint"}
    for _, records in jobs:
        assert len(history(records)) == 1
    return runs, summaries


def test_2x2_sweep_writes_results_runs_and_a_summary(tmp_path):
    proc, sweep = _sweep_2x2(tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs, summaries = _assert_four_runs_in_one_group(sweep)

    # every job's result file
    results = load_results(sweep)
    assert [r.status for r in results] == ["ok"] * 4
    assert sorted(r.name for r in results) == EXPECTED_NAMES
    assert {r.checkpoint for r in results} == {"demo_pspnet.pth", "b.pth"}
    assert {r.layers for r in results} == {"decoder", "backbone"}
    assert {r.reduction for r in results} == {"select_max"}
    for r in results:
        assert r.images == ["scene_000"] and r.error is None
        assert {"input", "prediction"} <= set(r.panels["scene_000"])
        assert not list(r.dir.glob(".featvis_result.json.*"))  # written atomically, no leftovers
        # the result file names each panel's picture, relative to the job dir, where the local backend wrote it
        files = json.loads((r.dir / RESULT_FILE).read_text())["panel_files"]["scene_000"]
        assert sorted(files) == sorted(r.panels["scene_000"])
        assert files["input"] == "featvis/local/scene_000/input.png"
        assert all((r.dir / name).is_file() for name in files.values())

    # share_forward: one forward pass per (checkpoint, image), taken by the other layer preset's job
    by_name = {r.name: (r.forwards, r.reused) for r in results}
    for ckpt in ("demo_pspnet.pth", "b.pth"):
        assert by_name[f"layers=decoder,model.checkpoint={ckpt}"] == (1, 0)
        assert by_name[f"layers=backbone,model.checkpoint={ckpt}"] == (0, 1)
    index = (sweep / "summary" / "index.html").read_text()
    assert index.count("<td>1</td>") >= 2 and index.count("<td>0 (1 reused)</td>") == 2
    plan = json.loads((sweep / "featvis_plan.json").read_text())["groups"]
    assert sorted((g["checkpoint"].split("/")[-1], g["jobs"]) for g in plan.values()) == [
        ("b.pth", 2), ("demo_pspnet.pth", 2)]

    # one contact sheet per image, its size matching the layout: a row per job,
    # a label tile + input + prediction + the most feature maps of any job
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 4}
    (sheet_info,) = summary["sheets"].values()
    n_maps = max(sum(p.startswith("featmap/") for p in r.panels["scene_000"]) for r in results)
    rows, cols = 4, 1 + 2 + n_maps
    h, w = TILE_H + BAND, round(TILE_H * 256 / 192)
    sheet = cv2.imread(str(sweep / "summary" / "contact_scene_000.png"))
    assert sheet.shape[:2] == (rows * h + (rows - 1) * GAP, cols * w + (cols - 1) * GAP)
    assert (sheet_info["rows"], sheet_info["cols"]) == (rows, cols)
    assert sorted(sheet_info["jobs"]) == EXPECTED_NAMES

    index = (sweep / "summary" / "index.html").read_text()
    assert index.count('<tr class="ok">') == 4 and "contact_scene_000.png" in index
    for name in EXPECTED_NAMES:
        assert name in index

    # one W&B summary run in the sweep's group, with the comparison table
    (summary_dir, records), = summaries
    run = run_record(records)
    assert run["display_name"] == "summary" and run["run_group"] == runs[0]["run_group"]
    assert (sweep / "summary" / "wandb") in summary_dir.parents
    (row,) = history(records)
    assert row["comparison._type"] == "table-file"


def test_a_failing_job_is_listed_in_the_summary(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers.names=[decode_head.conv_seg],[decode_head.nosuch]", f"image={DEMO_IMAGE}",
                   "backends=[local]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    results = {r.num: r for r in load_results(sweep)}
    assert results[0].status == "ok" and results[1].status == "failed"
    assert "nosuch" in results[1].error and results[1].images == []
    job_log = (results[1].dir / "run.log").read_text()
    assert "featvis: error: layer 'decode_head.nosuch'" in job_log and "Traceback" not in job_log
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1}
    assert summary["sheets"]["scene_000"]["rows"] == 1
    index = (sweep / "summary" / "index.html").read_text()
    assert index.count('<tr class="failed">') == 1 and "decode_head.nosuch" in index
    assert not (sweep / "summary" / "wandb").exists()  # no job used W&B
    # summarizing again by hand gives the same summary
    assert summarize(sweep) == sweep / "summary"
    assert json.loads((sweep / "summary" / "summary.json").read_text())["counts"] == summary["counts"]


def test_with_featvis_debug_a_failed_jobs_log_keeps_its_traceback(tmp_path):
    """Remote launchers (Ray, submitit) lose a job's traceback on the way back: the job's log keeps it."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers.names=[decode_head.nosuch]", f"image={DEMO_IMAGE}", "backends=[local]",
                   f"hydra.sweep.dir={sweep}", FEATVIS_DEBUG="1")
    assert proc.returncode == 1
    job_log = (sweep / "0" / "run.log").read_text()
    assert "Traceback" in job_log and "LayerNotFoundError" in job_log and "select_layers" in job_log


def test_single_run_writes_no_result_file_or_summary(tmp_path):
    out = tmp_path / "X"
    proc = run_cli(f"image={DEMO_IMAGE}", "backends=[local]", "layers.names=[decode_head.conv_seg]",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "featvis_result.json").exists() and not (out / "summary").exists()


def test_2x2_sweep_under_joblib(tmp_path):
    proc, sweep = _sweep_2x2(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr
    _, summaries = _assert_four_runs_in_one_group(sweep)
    assert len(summaries) == 1
    assert json.loads((sweep / "summary" / "summary.json").read_text())["counts"] == {"ok": 4}
    # jobs run at the same time in workers Hydra picks: each runs its own forward pass, no plan
    assert not (sweep / "featvis_plan.json").exists()
    assert [(r.forwards, r.reused) for r in load_results(sweep)] == [(1, 0)] * 4


@pytest.mark.slow  # about 33 s on 2 CPU cores: submitit starts a Python process per job
def test_2x2_sweep_under_submitit_local(tmp_path):
    proc, sweep = _sweep_2x2(tmp_path, "hydra/launcher=submitit_local")
    assert proc.returncode == 0, proc.stderr
    _, summaries = _assert_four_runs_in_one_group(sweep)
    assert len(summaries) == 1
    assert json.loads((sweep / "summary" / "summary.json").read_text())["counts"] == {"ok": 4}


# --------------------------------------------------------------------------- summaries of made-up sweeps


def _job(sweep: Path, num: int, name: str, local: bool, status: str = "ok", error=None) -> JobRecord:
    """A finished job of a sweep: its result file and, with `local`, its pictures where the local backend puts them."""
    job_dir = sweep / str(num)
    panels = {"scene_000": ["input", "prediction", "featmap/decode_head.conv_seg"]}
    record = JobRecord(dir=job_dir, num=num, name=name, status=status, error=error, images=["scene_000"],
                       panels=panels, backends=["local"] if local else ["wandb"], forwards=1, reused=0)
    if local:
        root = job_dir / "featvis" / "local"
        record.panel_files = {"scene_000": {p: str(panel_file(root, "scene_000", p).relative_to(job_dir))
                                            for p in panels["scene_000"]}}
        for i, name_ in enumerate(panels["scene_000"]):
            path = panel_file(root, "scene_000", name_)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((48, 64, 3), 60 * i, np.uint8))
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / RESULT_FILE).write_text(json.dumps(record.to_json()))
    return record


def test_jobs_without_the_local_backend_are_said_to_have_no_pictures(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "backends=[local]", local=True)
    _job(sweep, 1, "backends=[wandb]", local=False)
    (only_wandb,) = [r for r in load_results(sweep) if not r.has_pictures]
    assert only_wandb.picture("scene_000", "input") is None
    summarize(sweep)
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    assert summary["jobs"][1]["panel_files"] is None and summary["jobs"][0]["panel_files"]["scene_000"]
    index = (sweep / "summary" / "index.html").read_text()
    assert index.count(NO_PICTURES) == 1  # the wandb-only job's row
    # the contact sheet has both rows: pictures for the first job, the same words for the second
    sheet = summary["sheets"]["scene_000"]
    assert sheet["jobs"] == ["backends=[local]", "backends=[wandb]"] and sheet["cols"] == 4
    picture = cv2.imread(str(sweep / "summary" / sheet["file"]))
    h, w = sheet["tile"]
    second_row = picture[h + GAP:, w + GAP:]
    assert (second_row < 128).any()  # the note's text, where the pictures would be
    assert (second_row == 200).all(axis=-1).mean() < 0.01  # and no grey "missing picture" tile


def test_a_sweep_whose_jobs_all_ran_without_the_local_backend_has_no_contact_sheets(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "layers=decoder", local=False)
    _job(sweep, 1, "layers=backbone", local=False)
    summarize(sweep)
    assert json.loads((sweep / "summary" / "summary.json").read_text())["sheets"] == {}
    assert not list((sweep / "summary").glob("contact_*.png"))
    index = (sweep / "summary" / "index.html").read_text()
    assert index.count(NO_PICTURES) == 2 and "No contact sheets: no job ran with backends=[local]." in index


def test_the_index_escapes_names_and_errors(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "image=<script>alert(1)</script>.png", local=True)
    _job(sweep, 1, 'image="a&b".png', local=True, status="failed", error="bad <b>value</b>")
    summarize(sweep)
    index = (sweep / "summary" / "index.html").read_text()
    assert "<script>" not in index and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in index
    assert "<b>" not in index and "bad &lt;b&gt;value&lt;/b&gt;" in index
    assert "&#34;a&amp;b&#34;.png" in index
    assert index.count('<tr class="ok">') == 1 and index.count('<tr class="failed">') == 1


def test_job_records_round_trip_and_older_result_files_still_show_their_pictures(tmp_path):
    sweep = tmp_path / "sweep"
    record = _job(sweep, 0, "layers=decoder", local=True)
    (loaded,) = load_results(sweep)
    assert loaded == record
    # a result file from before `panel_files`: the local backend's default folder, if the job had it
    old = {k: v for k, v in record.to_json().items() if k != "panel_files"}
    (sweep / "0" / RESULT_FILE).write_text(json.dumps(old))
    (loaded,) = load_results(sweep)
    assert loaded.panel_files == record.panel_files and loaded.picture("scene_000", "input").is_file()


def test_hydras_private_basic_sweeper_and_launcher_are_where_the_plan_expects_them():
    """featvis.sweep.plan uses hydra._internal on purpose; a Hydra that moves it must fail here, loudly."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from featvis.sweep.plan import BASIC_LAUNCHER, BASIC_SWEEPER

    assert f"{BasicSweeper.__module__}.{BasicSweeper.__qualname__}" == BASIC_SWEEPER
    assert f"{BasicLauncher.__module__}.{BasicLauncher.__qualname__}" == BASIC_LAUNCHER
    parsed = OverridesParser.create().parse_overrides(["layers=decoder,backbone", "reduction=std,topk", "alpha=0.3"])
    batches = BasicSweeper.split_arguments(parsed, None)
    assert [sorted(job) for batch in batches for job in batch] == [
        ["alpha=0.3", f"layers={layers}", f"reduction={reduction}"]
        for layers in ("decoder", "backbone") for reduction in ("std", "topk")]
    assert len(BasicSweeper.split_arguments(parsed, 2)) == 2  # max_batch_size: batches of 2 jobs
