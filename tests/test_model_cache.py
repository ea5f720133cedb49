"""A sweep under the basic launcher runs its jobs in one process: each checkpoint is loaded once."""

import shutil

import pytest

from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.model import cache as model_cache
from featvis.model import load as model_load
from featvis.pipeline import job as pipeline
from featvis.render import panels as render_panels
from tests.helpers import job_config

ONE_IMAGE = "image=featvis::demo/images/scene_000.png"


@pytest.fixture
def init_calls(monkeypatch):
    calls = []
    real = model_load.init_model  # mmseg's, as featvis.model.load calls it
    monkeypatch.setattr(model_load, "init_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def _run(tmp_path, name, *overrides):
    return pipeline.run(job_config(ONE_IMAGE, "backends=[local]", *overrides), JobInfo(output_dir=tmp_path / name))


def test_jobs_over_layers_load_the_checkpoint_once(tmp_path, init_calls):
    _run(tmp_path, "a", "layers=decoder")
    _run(tmp_path, "b", "layers=backbone")
    _run(tmp_path, "c", "reduction=topk")
    assert len(init_calls) == 1
    assert sorted(p.name for p in (tmp_path / "b" / "featvis" / "local" / "scene_000" / "featmap").iterdir()) == [
        f"backbone[{i}].png" for i in range(4)]  # one per stage the backbone returns


def test_another_checkpoint_file_is_another_model(tmp_path, init_calls):
    copy = tmp_path / "copy.pth"
    shutil.copy(ASSETS / "checkpoints" / "demo_pspnet.pth", copy)
    _run(tmp_path, "a")
    _run(tmp_path, "b", f"model.checkpoint={copy}")
    _run(tmp_path, "c", f"model.checkpoint={copy}")
    assert len(init_calls) == 2


def test_capacity_zero_turns_the_cache_off(tmp_path, init_calls, monkeypatch):
    monkeypatch.setenv("FEATVIS_MODEL_CACHE", "0")
    _run(tmp_path, "a")
    _run(tmp_path, "b")
    assert len(init_calls) == 2


def test_a_failed_job_leaves_no_hooks_on_the_cached_model(tmp_path, monkeypatch):
    monkeypatch.setattr(render_panels, "overlay_maps", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, "a")
    ((_, loaded),) = model_cache._MODELS.items()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in loaded.model.modules()) == 0
