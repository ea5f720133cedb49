"""`python run.py ...` in a subprocess, as a user runs it: outputs, sweeps and one-line errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.data.paths import ASSETS
from tests.helpers import DEMO_IMAGE, history, run_cli, run_record, wandb_records, wandb_runs


def test_default_job_writes_pngs_and_an_offline_wandb_run(tmp_path):
    out = tmp_path / "X"
    proc = run_cli(f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # warnings go to the job log, not to stderr
    stems = sorted(p.stem for p in (ASSETS / "demo" / "images").glob("*.png"))
    pngs = {str(p.relative_to(out / "featvis" / "local" / stems[0]))[:-4]
            for p in (out / "featvis" / "local" / stems[0]).rglob("*.png")}
    assert {"input", "ground_truth", "prediction", "featmap/decode_head.conv_seg",
            "featmap/decode_head.bottleneck"} <= pngs
    (run_dir,) = wandb_runs(out)
    rows = history(wandb_records(run_dir))
    assert len(rows) == len(stems)
    assert {k[:-6] for k in rows[0] if k.endswith("._type") and ".masks." not in k} == pngs
    assert "featvis: results in" not in proc.stderr and "results in" in proc.stdout


def test_multirun_gives_one_wandb_run_per_job_in_one_group(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers=decoder,backbone", f"image={DEMO_IMAGE}", "backends=[wandb]",
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    runs = [run_record(wandb_records(d)) for d in wandb_runs(sweep)]
    runs = [r for r in runs if r["job_type"] != "summary"]  # the sweep's summary run: tests/test_sweeps.py
    assert len(runs) == 2
    assert len({r["run_group"] for r in runs}) == 1 and runs[0]["run_group"].startswith("sweep-")
    assert sorted(r["display_name"] for r in runs) == ["layers=backbone", "layers=decoder"]
    assert {r["job_type"] for r in runs} == {"layers"}
    assert len({r["run_id"] for r in runs}) == 2
    # the basic launcher runs both jobs in one process: the second reuses the loaded model
    assert "model reused" in (sweep / "1" / "run.log").read_text()
    assert "model reused" not in (sweep / "0" / "run.log").read_text()


def test_team_preset_folder_via_search_path(tmp_path):
    team = tmp_path / "team"
    (team / "preset").mkdir(parents=True)
    (team / "preset" / "ours.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /backends: [local]\nlayers:\n  names: [backbone.layer4]\n")
    out = tmp_path / "out"
    proc = run_cli(f"hydra.searchpath=[file://{team}]", "+preset=ours", f"image={DEMO_IMAGE}",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    maps = sorted(p.name for p in (out / "featvis" / "local" / "scene_000" / "featmap").iterdir())
    assert maps == ["backbone.layer4.png"]
    assert not (out / "featvis" / "wandb").exists()


def _bad_inputs(tmp: Path) -> dict:
    """name -> (overrides, words the one-line error must contain)."""
    (tmp / "broken.png").write_bytes(b"not an image")
    small_mask = tmp / "masks" / "scene_000.png"
    small_mask.parent.mkdir()
    cv2.imwrite(str(small_mask), np.zeros((10, 10), np.uint8))
    return {
        "missing image": ([f"image={tmp}/nope.png"], ["nope.png", "does not exist"]),
        "unreadable image": ([f"image={tmp}/broken.png"], ["broken.png", "not a readable image"]),
        "mask size": ([f"image={DEMO_IMAGE}", f"gt_mask={small_mask.parent}"], ["10x10", "256x192"]),
        "unknown layer": (["layers.names=[decode_head.conv_segg]"], ["conv_segg", "decode_head.conv_seg"]),
        "missing checkpoint": ([f"model.checkpoint={tmp}/none.pth"], ["none.pth", "model.checkpoint=null"]),
        "unreachable url": (["model.checkpoint=http://127.0.0.1:9/m.pth"],
                            ["cannot download", "model.checkpoint=null"]),
        "unknown key": (["modle=ann"], ["unknown config key", "modle"]),
        "unknown hydra key": (["hydra.job.nosuch=1"], ["unknown config key", "+hydra.job.nosuch=", "--cfg hydra"]),
        "unknown option": (["model=nosuch"], ["model/nosuch", "available", "ann"]),
        "bad value": (["alpha=2"], ["alpha=2.0 must be between 0 and 1"]),
        "wrong type": (["alpha=high"], ["alpha", "high"]),
        "unknown choice": (["normalize.mode=global"], ["normalize.mode", "global", "per_map, shared, fixed"]),
        "missing preset": (["layers=neck"], ["no 'neck' preset (it has no neck)", "'decoder'"]),
    }


@pytest.mark.parametrize("case", ["missing image", "unreadable image", "mask size", "unknown layer",
                                  "missing checkpoint", "unreachable url", "unknown key", "unknown hydra key",
                                  "unknown option",
                                  "bad value", "wrong type", "unknown choice", "missing preset"])
def test_bad_input_gives_one_line_and_no_results(tmp_path, case):
    overrides, words = _bad_inputs(tmp_path)[case]
    out = tmp_path / "X"
    proc = run_cli(*overrides, f"hydra.run.dir={out}")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("featvis: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (out / "featvis").exists() and not (out / "featvis.partial").exists()


def test_debug_switch_shows_the_traceback(tmp_path):
    proc = run_cli(f"image={tmp_path}/nope.png", f"hydra.run.dir={tmp_path}", FEATVIS_DEBUG="1")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "InputError" in proc.stderr


def test_skipped_image_exits_3_with_one_line_and_keeps_the_others(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "good.png").write_bytes(DEMO_IMAGE.read_bytes())
    (folder / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "X"
    proc = run_cli(f"image={folder}", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featvis: error: 1 image(s) skipped, first bad.png")
    assert (out / "featvis" / "local" / "good" / "prediction.png").is_file()


def test_unreachable_wandb_server_falls_back_to_offline_within_the_timeout(tmp_path):
    out = tmp_path / "X"
    proc = run_cli("wandb.mode=online", "wandb.init_timeout=3", "backends=[wandb]", f"image={DEMO_IMAGE}",
                   f"hydra.run.dir={out}", WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # wandb's own lines ("Loaded credentials ...") go to the job's log
    assert "Loaded credentials" in (out / "run.log").read_text()
    assert "logging offline instead" in proc.stdout and "wandb sync" in proc.stdout
    (run_dir,) = [d for d in wandb_runs(out) if d.name.startswith("offline-run-")]
    assert len(history(wandb_records(run_dir))) == 1
