"""share_forward: the jobs of a sweep that differ only in layers run the model once per image."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.config.job import JobInfo
from featvis.config.schema import validate
from featvis.engine import budget
from featvis.model import cache as model_cache
from featvis.pipeline import job as pipeline
from featvis.sweep import shared_forward
from featvis.sweep.plan import PLAN_FILE, make_plan, share_key
from tests.helpers import DEMO_IMAGE, compose_cfg, job_config, run_planned_sweep

LOCAL = ("backends=[local]",)
PRESETS = ("decoder", "backbone", "dense")


def test_plan_groups_jobs_by_model_checkpoint_and_reduction():
    cfgs = [compose_cfg(f"layers={p}", *extra) for p in PRESETS
            for extra in [(), ("model.checkpoint=b.pth",), ("reduction=std",), ("normalize.mode=shared",)]]
    plan = make_plan(cfgs)
    # normalize is drawn after recording: it shares; checkpoint and reduction make groups of their own
    assert sorted(g["jobs"] for g in plan.values()) == [3, 3, 6]
    biggest = max(plan.values(), key=lambda g: g["jobs"])
    # presets are resolved on the model by each job: the plan holds them as `preset:<name>`
    assert biggest["layers"] == [f"preset:{p}" for p in PRESETS]
    named = make_plan([compose_cfg("layers.names=[backbone.layer1,decode_head.bottleneck]"),
                       compose_cfg("layers.names=[decode_head.bottleneck,backbone.layer2]")])
    (group,) = named.values()
    assert group["layers"] == ["backbone.layer1", "decode_head.bottleneck", "backbone.layer2"]  # first seen, once
    assert share_key(compose_cfg("reduction=topk")) != share_key(compose_cfg("reduction=topk", "reduction.topk=2"))
    assert share_key(compose_cfg("reduction=topk")) == share_key(
        compose_cfg("reduction=topk", "reduction.arrangement=[1,4]"))  # drawn after recording


@pytest.mark.parametrize("overrides", [("reduction=gradcam",), ("reduction=pca_rgb", "reduction.shared_basis=true"),
                                       ("share_forward=false",), ("mode=list",)])
def test_jobs_that_cannot_share_are_left_out_of_the_plan(overrides):
    assert share_key(compose_cfg(*overrides)) is None
    assert make_plan([compose_cfg(*overrides, f"layers={p}") for p in PRESETS]) == {}


class _ForwardCounter:
    """Counts the forward passes of the (cached) demo model's backbone."""

    def __init__(self):
        loaded = model_cache.load(**_model_args())
        budget.probe(loaded.model)  # the memory budget's two tiny passes, once per model: not the images'
        self.calls = 0
        self.handle = loaded.model.backbone.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1


def _model_args():
    cfg = compose_cfg()
    return dict(config=cfg.model.config, checkpoint=cfg.model.checkpoint, device=cfg.device)


def _pictures(out: Path) -> dict:
    root = out / "featvis" / "local"
    return {str(p.relative_to(root)): cv2.imread(str(p)) for p in sorted(root.rglob("*.png"))}


def _run_sweep(sweep: Path, jobs, *extra):
    return run_planned_sweep(sweep, jobs, *LOCAL, *extra)


def test_a_layer_sweep_runs_the_model_once_per_image_and_draws_what_each_job_draws_alone(tmp_path):
    counter = _ForwardCounter()
    jobs = [[f"layers={p}"] for p in PRESETS]
    results = _run_sweep(tmp_path / "sweep", jobs)
    n_images = len(results[0].images)
    assert n_images == 3 and counter.calls == n_images  # not 3 jobs x 3 images
    assert [(r.forwards, r.reused) for r in results] == [(3, 0), (0, 3), (0, 3)]
    assert shared_forward.held_bytes() == 0  # every kept forward was taken by the other two jobs

    for i, overrides in enumerate(jobs):  # each job again, alone: the same pictures, pixel for pixel
        alone = pipeline.run(job_config(*LOCAL, *overrides), JobInfo(output_dir=tmp_path / f"alone{i}"))
        assert alone.forwards == n_images and alone.reused == 0
        shared, own = _pictures(tmp_path / "sweep" / str(i)), _pictures(tmp_path / f"alone{i}")
        assert sorted(shared) == sorted(own) and len(own) > 3 * n_images
        for name, picture in own.items():
            assert np.array_equal(shared[name], picture), name
    counter.handle.remove()


def test_jobs_with_other_layers_only_get_their_own_maps_and_stats(tmp_path):
    results = _run_sweep(tmp_path / "sweep", [["layers.names=[decode_head.conv_seg]"],
                                              ["layers.names=[backbone.layer4,decode_head.conv_seg]"]])
    assert results[1].reused == 3
    assert [p for p in results[0].panels["scene_000"] if p.startswith("featmap/")] == [
        "featmap/decode_head.conv_seg"]
    assert [p for p in results[1].panels["scene_000"] if p.startswith("featmap/")] == [
        "featmap/backbone.layer4", "featmap/decode_head.conv_seg"]  # the job's order, not the union's


def test_a_spec_that_fails_fails_only_its_own_job(tmp_path):
    cfg_ok, cfg_bad = (compose_cfg(*LOCAL, f"layers.names=[{n}]") for n in ("decode_head.conv_seg", "nosuch"))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / PLAN_FILE).write_text(json.dumps({"groups": make_plan([cfg_ok, cfg_bad])}))
    ok = pipeline.run(validate(cfg_ok), JobInfo(output_dir=sweep / "0", sweep_dir=sweep))
    assert ok.forwards == 3
    with pytest.raises(Exception, match="nosuch"):
        pipeline.run(validate(cfg_bad), JobInfo(output_dir=sweep / "1", sweep_dir=sweep))


def test_kept_forwards_stay_under_the_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATVIS_FORWARD_CACHE_MB", "0")  # nothing fits: every job runs the model
    counter = _ForwardCounter()
    results = _run_sweep(tmp_path / "sweep", [["layers=decoder"], ["layers=backbone"]])
    assert [(r.forwards, r.reused) for r in results] == [(3, 0), (3, 0)] and counter.calls == 6
    counter.handle.remove()


def test_when_full_the_first_images_stay_kept_and_the_next_job_runs_only_the_rest(tmp_path, monkeypatch):
    jobs = [["layers=decoder"], ["layers=backbone"]]
    cfgs = [compose_cfg(*LOCAL, *o) for o in jobs]
    sweep = tmp_path / "measure"
    sweep.mkdir()
    (sweep / PLAN_FILE).write_text(json.dumps({"groups": make_plan(cfgs)}))
    pipeline.run(validate(cfgs[0]), JobInfo(output_dir=sweep / "0", sweep_dir=sweep))  # keeps its 3 images
    per_image = shared_forward.held_bytes() / 3
    shared_forward.clear()
    monkeypatch.setenv("FEATVIS_FORWARD_CACHE_MB", str(2.5 * per_image / 2 ** 20))  # room for 2 of 3
    results = _run_sweep(tmp_path / "sweep", jobs)
    assert [(r.forwards, r.reused) for r in results] == [(3, 0), (1, 2)]


def test_an_edited_image_is_run_again(tmp_path):
    image = tmp_path / "img.png"
    source = cv2.imread(str(DEMO_IMAGE))
    cv2.imwrite(str(image), source)
    jobs = [["layers=decoder"], ["layers=backbone"]]
    cfgs = [compose_cfg(*LOCAL, f"image={image}", "gt_mask=null", *o) for o in jobs]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / PLAN_FILE).write_text(json.dumps({"groups": make_plan(cfgs)}))
    first = pipeline.run(validate(cfgs[0]), JobInfo(output_dir=sweep / "0", sweep_dir=sweep))
    cv2.imwrite(str(image), 255 - source)  # a different image under the same path
    second = pipeline.run(validate(cfgs[1]), JobInfo(output_dir=sweep / "1", sweep_dir=sweep))
    assert (first.forwards, second.forwards, second.reused) == (1, 1, 0)


def test_the_plan_expands_a_sweep_as_hydras_basic_sweeper_does():
    from omegaconf import OmegaConf

    from featvis.sweep.plan import BASIC_SWEEPER, sweep_overrides

    conf = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": BASIC_SWEEPER, "params": {"reduction": "std,topk"}},
        "overrides": {"task": ["layers=decoder,backbone", "alpha=0.3"]}}})
    jobs = sweep_overrides(conf)
    assert sorted(map(sorted, jobs)) == sorted(sorted(["alpha=0.3", f"layers={p}", f"reduction={r}"])
                                               for p in ("decoder", "backbone") for r in ("std", "topk"))
    conf.hydra.sweeper._target_ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweep_overrides(conf) is None  # jobs chosen as the sweep goes: no plan, each job runs alone


def test_a_reusing_job_warns_once_about_its_layers_that_have_no_map(tmp_path, caplog):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from featvis.model.load import LoadedModel
    from featvis.record.layers import Selected
    from featvis.reduce.base import Reduced

    loaded = LoadedModel(model=torch.nn.Identity(), device="cpu", dataset_meta={}, checkpoint=None)
    layers = [Selected("tokens", torch.nn.Identity()), Selected("conv", torch.nn.Identity())]
    first = shared_forward.Sharing(loaded, "k", layers[:1], layers[1:], jobs=3)
    second = shared_forward.Sharing(loaded, "k", layers[1:], layers[:1], jobs=3)
    sample = SegDataSample(metainfo={"img_shape": (2, 2)})
    sample.pred_sem_seg = PixelData(data=torch.zeros(1, 2, 2, dtype=torch.long))
    sample.seg_logits = PixelData(data=torch.zeros(5, 2, 2))
    images = [tmp_path / f"{i}.png" for i in range(2)]
    for image in images:
        image.write_bytes(b"x")
        first.keep(image, sample, {"tokens": {}, "conv": {"conv": [Reduced(torch.ones(1, 2, 2))]}},
                   {"tokens": {"tokens": "cannot tell the grid"}})
    assert all(shared_forward.Sharing(loaded, "k", layers[:1], [], 3).take(i) for i in images)  # job 2 of 3
    caplog.clear()
    taken = [second.take(image) for image in images]  # job 3 of 3: the last to take them
    kept_sample, by_layer = taken[0]
    assert "seg_logits" not in kept_sample and kept_sample.pred_sem_seg.data.shape == (1, 2, 2)
    assert by_layer["conv"]["conv"][0].maps.sum() == 4
    assert not [r for r in caplog.records if "is not drawn" in r.getMessage()]  # conv has no problem
    assert shared_forward.held_bytes() == 0  # every job of the group took both images
    third = shared_forward.Sharing(loaded, "k", layers[:1], [], 2)
    for image in images:
        first.keep(image, sample, {"tokens": {}, "conv": {}}, {"tokens": {"tokens": "cannot tell the grid"}})
    caplog.clear()
    assert all(third.take(image) for image in images)
    assert len([r for r in caplog.records if "tokens is not drawn" in r.getMessage()]) == 1
