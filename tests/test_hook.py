"""FeatvisHook inside a real MMEngine training run of the demo config (Runner.from_cfg(cfg).train())."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from featvis.engine.session import Session
from featvis.errors import ConfigError
from tests.helpers import ROOT, wandb_records, wandb_runs

TRAIN_CONFIG = ROOT / "featvis" / "assets" / "configs" / "demo_pspnet_train.py"
ITERS, EVERY = 20, 10


def _config(work_dir: Path, hook: dict = None, wandb: bool = False) -> Config:
    cfg = Config.fromfile(str(TRAIN_CONFIG))
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters, cfg.train_cfg.val_interval = ITERS, EVERY
    cfg.param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=ITERS, by_epoch=False)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 10_000  # no checkpoint files
    cfg.custom_hooks = [] if hook is None else [dict(type="FeatvisHook", **hook)]
    if wandb:
        cfg.visualizer.vis_backends = [dict(type="LocalVisBackend"), dict(
            type="WandbVisBackend", init_kwargs=dict(project="featvis-test", mode="offline", dir=str(work_dir)))]
    cfg.visualizer.name = f"vis_{work_dir.name}"  # MMEngine's visualizers are named instances, one per run here
    return cfg


def _train(cfg: Config) -> Path:
    runner = Runner.from_cfg(cfg)
    runner.train()
    runner.visualizer.close()
    return Path(runner.log_dir) / "vis_data"


def _losses(vis_data: Path):
    rows = [json.loads(line) for line in (vis_data / "scalars.json").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo config trained twice, the same seed: without the hook, and with it (local and offline W&B)."""
    plain = _train(_config(tmp_path_factory.mktemp("plain")))
    hooked_dir = tmp_path_factory.mktemp("hooked")
    real = Session.draw_items

    def drawing_that_draws_random_numbers(self, items, step=None):  # as a reduction or a library might
        random.random(), np.random.rand(), torch.rand(3)
        return real(self, items, step=step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Session, "draw_items", drawing_that_draws_random_numbers)
        hooked = _train(_config(hooked_dir, dict(layers=["backbone.layer4", "decode_head.conv_seg"],
                                                  reduction="select_max", interval=EVERY), wandb=True))
    return plain, hooked, hooked_dir


def test_the_hook_draws_each_layer_at_every_interval_into_the_runs_visualizer(runs):
    _, hooked, _ = runs
    images = hooked / "vis_image" / "featvis"
    assert sorted(p.name for p in images.iterdir()) == ["scene_000", "scene_001", "scene_002"]
    for step in (EVERY, ITERS):
        for layer in ("backbone.layer4", "decode_head.conv_seg"):
            assert (images / "scene_001" / "featmap" / f"{layer}_{step}.png").stat().st_size > 0
        assert (images / "scene_001" / f"prediction_{step}.png").is_file()
    assert [p.name for p in (images / "scene_001").glob("input_*.png")] == [f"input_{EVERY}.png"]  # once
    assert [p.name for p in (images / "scene_001").glob("ground_truth_*.png")] == [f"ground_truth_{EVERY}.png"]


def test_cka_and_change_against_the_start_are_logged_from_the_second_drawing(runs):
    _, hooked, _ = runs
    rows = [json.loads(line) for line in (hooked / "scalars.json").read_text().splitlines()]
    moved = [r for r in rows if "featvis/cka_to_start/backbone.layer4" in r]
    assert [r["step"] for r in moved] == [ITERS]
    row = moved[0]
    assert 0.0 < row["featvis/cka_to_start/backbone.layer4"] < 1.0  # the backbone moved in 10 SGD steps
    assert row["featvis/change_to_start/decode_head.conv_seg"] > 0.0
    assert row["featvis/cka_to_previous/backbone.layer4"] == row["featvis/cka_to_start/backbone.layer4"]


def test_the_same_seed_gives_the_same_losses_with_and_without_the_hook(runs):
    """The hooked run's drawings draw random numbers (the fixture): the hook puts the RNG states back."""
    plain, hooked, _ = runs
    assert len(_losses(plain)) == ITERS and _losses(plain) == _losses(hooked)


def test_wandb_gets_the_pictures_on_the_iteration_axis(runs):
    _, _, hooked_dir = runs
    (run,) = wandb_runs(hooked_dir)
    rows = [r["history"]["item"] for r in wandb_records(run) if r.get("type") == "history"]
    steps = {r.get("featvis/iter") for r in rows if any(k.startswith("featvis/scene_000/featmap/") for k in r)}
    assert steps == {EVERY, ITERS}
    assert any("featvis/cka_to_start/decode_head.conv_seg" in r and r["featvis/iter"] == ITERS for r in rows)
    tables = [r for r in rows if r.get("featvis/movement._type") == "table-file"]  # the table of latest values
    assert [(r["featvis/iter"], r["featvis/movement.nrows"]) for r in tables] == [(ITERS, 2)]  # a row per layer


def test_a_layer_that_matches_nothing_stops_the_run_before_its_first_iteration(tmp_path):
    runner = Runner.from_cfg(_config(tmp_path, dict(layers=["decode_head.conv_segg"], interval=EVERY)))
    with pytest.raises(ConfigError, match="FeatvisHook: layer 'decode_head.conv_segg' matches no module") as err:
        runner.train()
    assert "\n" not in str(err.value) and runner.iter == 0


def test_a_failure_while_drawing_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    def broken(self, items, step=None):
        raise RuntimeError("injected: out of memory while drawing")
    monkeypatch.setattr(Session, "draw_items", broken)
    runner = Runner.from_cfg(_config(tmp_path, dict(layers="decoder", interval=EVERY)))
    runner.train()
    assert runner.iter == ITERS
    log = next(Path(runner.log_dir).glob("*.log")).read_text()
    assert log.count("FeatvisHook: drawing at iteration") == 2 and "injected: out of memory" in log


def test_a_runner_built_in_python_with_a_hook_object(tmp_path):
    """No config file: the model has no cfg and the runner's config is empty; the hook lends a test pipeline."""
    from featvis.hooks import FeatvisHook

    cfg = Config.fromfile(str(TRAIN_CONFIG))
    runner = Runner(model=cfg.model, work_dir=str(tmp_path), train_dataloader=cfg.train_dataloader,
                    train_cfg=dict(type="IterBasedTrainLoop", max_iters=EVERY), optim_wrapper=cfg.optim_wrapper,
                    default_scope="mmseg", custom_hooks=[FeatvisHook(layers=["decode_head.conv_seg"], interval=5,
                                                                    images=str(ROOT / "featvis/assets/demo/images"))],
                    visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")],
                                    name="vis_plain_runner"))
    runner.train()
    drawn = sorted(p.name for p in Path(runner.log_dir).rglob("decode_head.conv_seg_*.png"))
    assert len(drawn) == 6 and set(drawn) == {"decode_head.conv_seg_5.png", "decode_head.conv_seg_10.png"}
    assert not hasattr(runner.model, "cfg")  # lent while drawing, taken back
