"""Say what is wrong: non-finite weights, and a model.config or checkpoint that is a folder, a FIFO or no
model config at all, each one line naming the fix ("does not exist" only for what does not exist)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.errors import CheckpointError
from featvis.pipeline import job as pipeline
from tests.helpers import DEMO_IMAGE, error_line, job_config, run_cli

DEMO_CKPT = ASSETS / "checkpoints" / "demo_pspnet.pth"
FAST = ("backends=[local]", f"image={DEMO_IMAGE}", "layers.names=[decode_head.conv_seg]")


def _diverged(tmp_path: Path) -> Path:
    demo = torch.load(DEMO_CKPT, map_location="cpu", weights_only=True)
    state = dict(demo["state_dict"])
    state["backbone.stem.0.weight"] = state["backbone.stem.0.weight"].clone()
    state["backbone.stem.0.weight"].view(-1)[:3] = float("nan")
    state["decode_head.conv_seg.bias"] = torch.full_like(state["decode_head.conv_seg.bias"], float("inf"))
    path = tmp_path / "iter_900.pth"
    torch.save({"state_dict": state, "meta": demo["meta"]}, path)
    return path


def test_non_finite_weights_fail_in_one_line_naming_how_many_and_where(tmp_path):
    ckpt = _diverged(tmp_path)
    line = error_line(run_cli(*FAST, f"model.checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'out'}"))
    assert f"checkpoint '{ckpt}' holds 7 NaN or infinite values in 2 of its" in line  # 3 NaN + 4 classes' Inf
    assert "(first backbone.stem.0.weight, decode_head.conv_seg.bias)" in line
    assert "pass an earlier checkpoint, or model.strict=false" in line
    assert not (tmp_path / "out" / "featvis").exists()


def test_non_finite_weights_draw_with_strict_false_and_say_so(tmp_path):
    ckpt = _diverged(tmp_path)
    cfg = job_config(*FAST, f"model.checkpoint={ckpt}", "model.strict=false")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "out"))
    assert result.weights == "non-finite weights: 7 values in 2 tensors"
    assert (tmp_path / "out" / "featvis" / "local" / "scene_000" / "prediction.png").is_file()


def test_a_finite_checkpoint_is_not_refused():
    from featvis.model.load import _check_finite

    demo = torch.load(DEMO_CKPT, map_location="cpu", weights_only=True)
    assert _check_finite(demo, "demo", strict=True) is None
    huge = {"state_dict": {"w": torch.full((4,), 3e38)}}  # finite values whose sum overflows
    assert _check_finite(huge, "huge", strict=True) is None
    with pytest.raises(CheckpointError, match="1 NaN or infinite values in 1 of its 1 tensors"):
        _check_finite({"state_dict": {"w": torch.tensor([1.0, float("-inf")])}}, "x", strict=True)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_checkpoint_that_is_not_a_file_is_said_for_what_it_is(tmp_path, kind):
    path = tmp_path / "work_dirs"
    if kind == "folder":
        path.mkdir()
        said = f"checkpoint '{path}' is a folder, not a file: pass the checkpoint file in it"
    else:
        os.mkfifo(path)  # reading it would block for ever
        said = f"checkpoint '{path}' is a FIFO (named pipe), not a file"
    line = error_line(run_cli(*FAST, f"model.checkpoint={path}"))
    assert said in line and "does not exist" not in line


def test_a_missing_checkpoint_still_does_not_exist(tmp_path):
    line = error_line(run_cli(*FAST, f"model.checkpoint={tmp_path / 'nope.pth'}"))
    assert "does not exist" in line


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_model_config_that_is_not_a_file_is_said_for_what_it_is(tmp_path, kind):
    path = tmp_path / "configs"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    line = error_line(run_cli(*FAST, f"model.config={path}", "model.checkpoint=null"))
    assert f"model.config='{path}': is a {'folder' if kind == 'folder' else 'FIFO (named pipe)'}, not a file" in line
    assert "no such file" not in line


def test_a_yaml_that_is_no_model_config_says_so(tmp_path):
    option = tmp_path / "ann.yaml"  # a featvis model option, given as model.config by mistake
    option.write_text("config: mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py\n")
    line = error_line(run_cli(*FAST, f"model.config={option}", "model.checkpoint=null"))
    assert f"model.config '{option}' defines no model" in line
    assert "chosen with model=ann, not model.config" in line and "unexpected" not in line
