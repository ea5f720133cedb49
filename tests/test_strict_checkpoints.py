"""A checkpoint that does not fit the model is an error; model.strict=false draws anyway and says so.

The checkpoints are the demo checkpoint with none, half, or all but one of the model's
keys right (one tensor of the wrong shape): MMEngine would load what fits, leave the rest
at its random initialisation and print a note on stdout only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict

import pytest
import torch

from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.engine.result import JobResult
from featvis.errors import CheckpointError
from featvis.model import cache as model_cache
from featvis.pipeline import job as pipeline
from featvis.sweep.results import JobRecord, job_record
from tests.helpers import DEMO_IMAGE, compose_cfg, error_line, history, job_config, run_cli, wandb_records, wandb_runs

CONFIG = "featvis::configs/demo_pspnet.py"
DEMO_CKPT = ASSETS / "checkpoints" / "demo_pspnet.pth"
WRONG = "decode_head.conv_seg.weight"


@pytest.fixture(scope="module")
def demo() -> dict:
    return torch.load(DEMO_CKPT, map_location="cpu", weights_only=True)


def _weights(demo: dict) -> Dict[str, torch.Tensor]:
    """The demo's tensors as the model has them, BatchNorm's counters left out (they are not weights)."""
    return {k: v for k, v in demo["state_dict"].items() if not k.endswith("num_batches_tracked")}


def _broken(tmp_path: Path, demo: dict, kind: str) -> Path:
    state = dict(demo["state_dict"])
    if kind == "none":  # another model's names: nothing matches
        state = {f"other_model.{k}": v for k, v in state.items()}
    elif kind == "half":  # every other tensor left out
        state = {k: v for i, (k, v) in enumerate(_weights(demo).items()) if i % 2 == 0}
    elif kind == "one_wrong_shape":  # five classes where the model has four
        state[WRONG] = torch.zeros((5,) + tuple(state[WRONG].shape[1:]))
    path = tmp_path / f"{kind}.pth"
    torch.save({"state_dict": state, "meta": demo["meta"]}, path)
    return path


def _expected_counts(demo: dict, kind: str) -> str:
    total = len(_weights(demo))
    return {"none": f"{total} of the model's {total} keys missing",
            "half": f"{total // 2} of the model's {total} keys missing",
            "one_wrong_shape": f"0 of the model's {total} keys missing"}[kind]


@pytest.mark.parametrize("kind", ["none", "half", "one_wrong_shape"])
def test_a_checkpoint_that_does_not_fit_fails_in_one_line(tmp_path, demo, kind):
    path = _broken(tmp_path, demo, kind)
    out = tmp_path / "out"
    proc = run_cli(f"model.checkpoint={path}", f"image={DEMO_IMAGE}", "backends=[local]", f"hydra.run.dir={out}")
    line = error_line(proc)
    assert str(path) in line and "does not fit" in line and "model.strict=false" in line
    assert _expected_counts(demo, kind) in line
    total = len(_weights(demo))
    if kind == "none":
        assert f"{total} unexpected (other_model." in line
    if kind == "half":
        assert "0 unexpected" in line and "0 of wrong shape" in line
    if kind == "one_wrong_shape":
        assert f"1 of wrong shape ({WRONG}: checkpoint 5x32x1x1, model 4x32x1x1)" in line
    assert not (out / "featvis").exists()
    assert "do not match" not in proc.stdout  # featvis says it, MMEngine's stdout note is not needed


def test_not_strict_draws_with_the_note_in_log_captions_and_result(tmp_path, demo, caplog, capfd):
    path = _broken(tmp_path, demo, "half")
    total = len(_weights(demo))
    note = f"partly random weights: {total // 2} of {total} missing"
    with caplog.at_level(logging.WARNING):
        result = pipeline.run(job_config(f"model.checkpoint={path}", "model.strict=false", f"image={DEMO_IMAGE}",
                                          "backends=[wandb,local]"), JobInfo(output_dir=tmp_path / "job"))
    assert result.weights == note
    assert any("model.strict=false" in r.message and "RANDOM" in r.message for r in caplog.records)
    assert "do not match" not in capfd.readouterr().out  # MMEngine's own note is silenced
    stem = DEMO_IMAGE.stem
    maps = [p for p in result.panels[stem] if p.startswith("featmap/")]
    assert len(maps) == 6
    for panel in maps:
        assert (tmp_path / "job" / "featvis" / "local" / stem / f"{panel}.png").is_file()
    (run_dir,) = wandb_runs(tmp_path / "job" / "featvis")
    row = history(wandb_records(run_dir))[0]
    for panel in maps + ["prediction"]:
        assert note in row[f"{panel}.caption"], panel
    assert note not in row["input.caption"]


def test_one_wrong_shape_not_strict_is_said_too(tmp_path, demo):
    path = _broken(tmp_path, demo, "one_wrong_shape")
    loaded = model_cache.load(CONFIG, str(path), "cpu", strict=False)
    assert loaded.weights_note == f"partly random weights: 0 of {len(_weights(demo))} missing, 1 wrong shape"
    assert loaded.model.decode_head.conv_seg.weight.shape == (4, 32, 1, 1)  # the model's own, random


def test_strict_is_part_of_the_model_cache_key(tmp_path, demo):
    path = _broken(tmp_path, demo, "half")
    assert model_cache.load(CONFIG, str(path), "cpu", strict=False).weights_note
    with pytest.raises(CheckpointError, match="does not fit"):  # not the lenient model from the cache
        model_cache.load(CONFIG, str(path), "cpu", strict=True)


def test_the_demo_checkpoint_fits_and_carries_no_note():
    loaded = model_cache.load(CONFIG, str(DEMO_CKPT), "cpu")
    assert loaded.mismatch is None and loaded.weights_note is None


def test_sweep_result_file_carries_the_weights_note(tmp_path):
    note = "partly random weights: 60 of 120 missing"
    result = JobResult(output_dir=tmp_path / "featvis", images=["a"], panels={"a": ["input"]}, weights=note)
    record = job_record(compose_cfg("backends=[wandb]"), JobInfo(output_dir=tmp_path), result, None, None)
    assert record.status == "ok" and record.to_json()["weights"] == note
    assert JobRecord.from_json(record.to_json(), tmp_path).weights == note


def test_a_sweep_job_that_skipped_images_keeps_the_weights_note(tmp_path, demo):
    """Exit 3 (images skipped) still records what the job drew, and with which weights."""
    ckpt = _broken(tmp_path, demo, "half")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(DEMO_IMAGE.read_bytes())
    (images / "b.png").write_bytes(DEMO_IMAGE.read_bytes()[: len(DEMO_IMAGE.read_bytes()) // 2])  # truncated
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", f"image={images}", "gt_mask=null", f"model.checkpoint={ckpt}", "model.strict=false",
                   "backends=[local]", "alpha=0.4,0.6", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 3, proc.stderr
    for job in ("0", "1"):
        record = JobRecord.from_json(json.loads((sweep / job / "featvis_result.json").read_text()),
                                     sweep / job)
        assert record.status == "skipped-images" and record.images == ["a"]
        assert record.weights == f"partly random weights: {len(_weights(demo)) // 2} of {len(_weights(demo))} missing"
