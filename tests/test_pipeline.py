"""The whole job in-process, on the demo model: pictures, W&B records, failure handling."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.engine import drawer
from featvis.pipeline import job as pipeline
from featvis.render.draw import SCALE_BAR_GAP, scale_bar_rows
from featvis.render.labels import overlay_labels
from tests.helpers import exit_code, history, job_config, run_record, wandb_records, wandb_runs

DEMO_STEMS = sorted(p.stem for p in (ASSETS / "demo" / "images").glob("*.png"))
DECODER_MAPS = ["decode_head.psp_modules[0]", "decode_head.psp_modules[1]", "decode_head.psp_modules[2]",
                "decode_head.psp_modules[3]", "decode_head.bottleneck", "decode_head.conv_seg"]


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def default_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    result = pipeline.run(job_config(), JobInfo(output_dir=out))
    return out, result


def test_every_panel_written_for_every_image(default_job):
    out, result = default_job
    assert result.images == DEMO_STEMS
    for stem in DEMO_STEMS:
        folder = out / "featvis" / "local" / stem
        panels = ["input", "ground_truth", "prediction"] + [f"featmap/{m}" for m in DECODER_MAPS]
        assert result.panels[stem] == panels
        for panel in panels:
            assert (folder / f"{panel}.png").is_file(), panel
    assert not (out / "featvis.partial").exists()


def test_input_picture_is_the_image_in_rgb(default_job):
    out, _ = default_job
    stem = DEMO_STEMS[0]
    shipped = _rgb(ASSETS / "demo" / "images" / f"{stem}.png")
    assert np.array_equal(_rgb(out / "featvis" / "local" / stem / "input.png"), shipped)


def test_prediction_and_ground_truth_pictures_match_the_model_and_mask(default_job):
    from mmseg.apis import inference_model

    from featvis.model.load import load_model

    out, _ = default_job
    stem = DEMO_STEMS[1]
    bgr = cv2.imread(str(ASSETS / "demo" / "images" / f"{stem}.png"))
    loaded = load_model("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu")
    pred = inference_model(loaded.model, bgr).pred_sem_seg.data[0].numpy()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    palette = loaded.dataset_meta["palette"]
    expected = overlay_labels(pred, rgb, palette, 0.5)
    assert np.array_equal(_rgb(out / "featvis" / "local" / stem / "prediction.png"), expected)
    gt = cv2.imread(str(ASSETS / "demo" / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    expected_gt = overlay_labels(gt, rgb, palette, 0.5)
    assert np.array_equal(_rgb(out / "featvis" / "local" / stem / "ground_truth.png"), expected_gt)


def test_feature_maps_are_overlays_of_the_image(default_job):
    out, _ = default_job
    stem = DEMO_STEMS[0]
    image = _rgb(out / "featvis" / "local" / stem / "input.png").astype(int)
    fmap = _rgb(out / "featvis" / "local" / stem / "featmap" / "decode_head.conv_seg.png").astype(int)
    h, w = image.shape[:2]
    assert fmap.shape == (h + scale_bar_rows(h, w), w, 3)  # the colour scale added below the map
    assert (fmap[h:h + SCALE_BAR_GAP] == 255).all() and (fmap[h + SCALE_BAR_GAP:] != 255).any()
    fmap = fmap[:h]  # every row of the map, the bottom ones too: an overlay of the image
    heat = 2 * fmap - image  # alpha 0.5: what was blended over the image
    assert heat.min() >= -2 and heat.max() <= 257  # a real colour map, not a copy of the image
    assert np.abs(fmap - image).mean() > 10


def test_wandb_run_holds_one_row_per_image_with_every_panel(default_job):
    out, result = default_job
    (run_dir,) = wandb_runs(out / "featvis")
    records = wandb_records(run_dir)
    rows = history(records)
    assert [r["_step"] for r in rows] == list(range(len(DEMO_STEMS)))
    for row, stem in zip(rows, DEMO_STEMS):
        logged = {k.rsplit(".", 1)[0] for k in row if k.endswith("._type") and ".masks." not in k}
        assert logged == set(result.panels[stem])
        assert all(row[f"{k}._type"] == "image-file" for k in logged)
    run = run_record(records)
    assert run["config"]["update"]["model"]["name"] == "demo_pspnet"  # the resolved job config: the config stem
    assert exit_code(records) == 0


def test_captions_name_image_layer_reduction_and_channel(default_job):
    out, _ = default_job
    (run_dir,) = wandb_runs(out / "featvis")
    row = history(wandb_records(run_dir))[0]
    caption = row["featmap/decode_head.bottleneck.caption"]
    # the bottleneck works at 1/8 of the input (24x32 maps of a 192x256 scene)
    assert caption.startswith(f"{DEMO_STEMS[0]} | decode_head.bottleneck 1/8 | select_max ch ")
    # global pooling: one value per channel, so nothing to colour; said, not drawn as data
    assert row["featmap/decode_head.psp_modules[0].caption"].endswith("constant map, not coloured")
    assert "constant" not in row["featmap/decode_head.psp_modules[1].caption"]


def test_wandb_images_are_the_local_pictures_in_wandbs_format(default_job):
    from featvis.backends.encoding import PictureFormat

    out, _ = default_job
    (run_dir,) = wandb_runs(out / "featvis")
    row = history(wandb_records(run_dir))[0]
    logged = run_dir / "files" / row["featmap/decode_head.bottleneck.path"]
    local = _rgb(out / "featvis" / "local" / DEMO_STEMS[0] / "featmap" / "decode_head.bottleneck.png")
    # the W&B file is the local picture, JPEG-encoded at wandb.quality and wandb.max_side: nothing else differs
    assert logged.suffix == ".jpg"
    assert logged.read_bytes() == PictureFormat("jpeg", 90, 1024).encode(local)


def test_topk_draws_a_grid(tmp_path):
    pipeline.run(job_config("reduction=topk", "backends=[local]", "layers.names=[decode_head.bottleneck]",
                             "image=featvis::demo/images/scene_000.png"), JobInfo(output_dir=tmp_path))
    picture = cv2.imread(str(tmp_path / "featvis" / "local" / "scene_000" / "featmap" / "decode_head.bottleneck.png"))
    h, w = cv2.imread(str(ASSETS / "demo" / "images" / "scene_000.png")).shape[:2]
    tile_h = h + scale_bar_rows(h, w)  # each tile has its own colour scale below it
    assert picture.shape[:2] == (2 * tile_h + 4, 2 * w + 4)
    assert (picture[h:h + SCALE_BAR_GAP] == 255).all() and (picture[tile_h + 4 + h:][:SCALE_BAR_GAP] == 255).all()


def test_two_jobs_in_one_process_get_two_wandb_runs(tmp_path):
    """As under Hydra's basic launcher: each job must finish its run and start its own."""
    cfg = ["backends=[wandb]", "image=featvis::demo/images/scene_000.png"]
    pipeline.run(job_config(*cfg, "layers=decoder"), JobInfo(output_dir=tmp_path / "a", overrides=["layers=decoder"]))
    pipeline.run(job_config(*cfg, "layers=backbone"),
                 JobInfo(output_dir=tmp_path / "b", overrides=["layers=backbone"]))
    (run_a,), (run_b,) = wandb_runs(tmp_path / "a"), wandb_runs(tmp_path / "b")
    rec_a, rec_b = wandb_records(run_a), wandb_records(run_b)
    assert run_record(rec_a)["run_id"] != run_record(rec_b)["run_id"]
    assert run_record(rec_b)["display_name"] == "layers=backbone"
    assert len(history(rec_a)) == len(history(rec_b)) == 1
    assert any(k.startswith("featmap/backbone[3]") for k in history(rec_b)[0])  # one map per stage


def test_model_loaded_once_for_all_images(tmp_path, monkeypatch):

    calls = []
    from featvis.model import load as model_load

    real = model_load.init_model  # mmseg's, as featvis.model.load calls it
    monkeypatch.setattr(model_load, "init_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    result = pipeline.run(job_config("backends=[local]"), JobInfo(output_dir=tmp_path))
    assert len(result.images) == len(DEMO_STEMS) > 1 and len(calls) == 1


def test_failure_mid_run_leaves_no_results_that_look_complete(tmp_path, monkeypatch):
    real = drawer.make_panels

    def fail_on_second_image(style, recorded, *args, **kwargs):
        # by name, not by call count: images are drawn on several threads at once
        if recorded.item.sample.stem == DEMO_STEMS[1]:
            raise RuntimeError("disk full")
        return real(style, recorded, *args, **kwargs)

    monkeypatch.setattr(drawer, "make_panels", fail_on_second_image)  # where the Drawer calls it
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.run(job_config(), JobInfo(output_dir=tmp_path))
    assert not (tmp_path / "featvis").exists()
    assert (tmp_path / "featvis.partial" / "local" / DEMO_STEMS[0] / "input.png").is_file()
    (run_dir,) = wandb_runs(tmp_path / "featvis.partial")
    records = wandb_records(run_dir)
    assert exit_code(records) == 1  # the W&B run is marked failed, and keeps what it logged
    assert len(history(records)) == 1


def test_tensorboard_backend_from_mmengine_gets_the_same_panels(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = pipeline.run(job_config("backends=[tensorboard]", "image=featvis::demo/images/scene_000.png"),
                          JobInfo(output_dir=tmp_path))
    events = EventAccumulator(str(tmp_path / "featvis" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == sorted(result.panels["scene_000"])
    assert events.Images("prediction")[0].width == 256


def test_dataset_split_of_the_model_config_gives_images_and_ground_truth(tmp_path):
    result = pipeline.run(job_config("image=dataset:test", "gt_mask=null", "backends=[local]"),
                          JobInfo(output_dir=tmp_path))
    assert result.images == DEMO_STEMS
    gt = _rgb(tmp_path / "featvis" / "local" / DEMO_STEMS[0] / "ground_truth.png")
    mask = cv2.imread(str(ASSETS / "demo" / "masks" / f"{DEMO_STEMS[0]}.png"), cv2.IMREAD_UNCHANGED)
    image = _rgb(ASSETS / "demo" / "images" / f"{DEMO_STEMS[0]}.png")
    from featvis.demo.scenes import PALETTE
    assert np.array_equal(gt, overlay_labels(mask, image, PALETTE, 0.5))


def test_unknown_dataset_split_names_the_ones_there(tmp_path):
    from featvis.errors import InputError

    with pytest.raises(InputError, match=r"no val_dataloader; use one of \['test'\]"):
        pipeline.run(job_config("image=dataset:val", "backends=[local]"), JobInfo(output_dir=tmp_path))


def test_max_images_and_random_sampling(tmp_path):
    result = pipeline.run(job_config("max_images=2", "sample=random", "seed=3", "backends=[local]"),
                          JobInfo(output_dir=tmp_path / "a"))
    again = pipeline.run(job_config("max_images=2", "sample=random", "seed=3", "backends=[local]"),
                         JobInfo(output_dir=tmp_path / "b"))
    assert len(result.images) == 2 and result.images == again.images


def test_bad_image_is_skipped_the_others_logged_and_the_job_says_so(tmp_path):
    from featvis.errors import SkippedImagesError

    folder = tmp_path / "images"
    folder.mkdir()
    for stem in DEMO_STEMS[:2]:
        (folder / f"{stem}.png").write_bytes((ASSETS / "demo" / "images" / f"{stem}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(SkippedImagesError, match="1 image\\(s\\) skipped, first broken.png") as err:
        pipeline.run(job_config(f"image={folder}", "backends=[local,wandb]"), JobInfo(output_dir=out))
    assert err.value.exit_code == 3
    assert sorted(p.name for p in (out / "featvis" / "local").iterdir() if p.is_dir()) == DEMO_STEMS[:2]
    assert "broken.png" in (out / "featvis" / "skipped.txt").read_text()
    (run_dir,) = wandb_runs(out / "featvis")
    assert len(history(wandb_records(run_dir))) == 2


def test_captions_give_the_colour_scale_and_signed_maps_diverge(default_job):
    out, _ = default_job
    (run_dir,) = wandb_runs(out / "featvis")
    row = history(wandb_records(run_dir))[0]
    assert row["featmap/decode_head.conv_seg.caption"].endswith(", diverging")  # logits: signed
    assert "(per map)" in row["featmap/decode_head.bottleneck.caption"]


def test_shared_normalization_gives_every_image_the_same_range_per_layer(tmp_path):
    pipeline.run(job_config("normalize.mode=shared", "backends=[wandb]"), JobInfo(output_dir=tmp_path))
    (run_dir,) = wandb_runs(tmp_path / "featvis")
    rows = history(wandb_records(run_dir))
    for layer in ("decode_head.bottleneck", "decode_head.conv_seg"):
        captions = [row[f"featmap/{layer}.caption"] for row in rows]
        ranges = {c.split(" | ")[-1] for c in captions}
        assert len(captions) == len(DEMO_STEMS) and len(ranges) == 1 and "shared over run" in ranges.pop()


@pytest.mark.parametrize("reduction, expected_note", [
    (["reduction=class_map", "reduction.target_class=circle"], "class circle"),
    (["reduction=gradcam", "reduction.target_class=1"], "Grad-CAM circle"),
])
def test_class_reductions_highlight_the_class_in_the_pipeline(tmp_path, reduction, expected_note):
    stem = DEMO_STEMS[0]
    result = pipeline.run(job_config(*reduction, "backends=[wandb,local]", "layers.names=[decode_head.bottleneck]",
                                      f"image=featvis::demo/images/{stem}.png", "normalize.scale_bar=false"),
                          JobInfo(output_dir=tmp_path))
    assert result.panels[stem][-1] == "featmap/decode_head.bottleneck"
    (run_dir,) = wandb_runs(tmp_path / "featvis")
    assert expected_note in history(wandb_records(run_dir))[0]["featmap/decode_head.bottleneck.caption"]
    # the picture is warmest where the circles are: compare the overlay's red-minus-blue inside and outside
    picture = _rgb(tmp_path / "featvis" / "local" / stem / "featmap" / "decode_head.bottleneck.png").astype(int)
    image = _rgb(ASSETS / "demo" / "images" / f"{stem}.png").astype(int)
    heat = 2 * picture - image  # alpha 0.5
    warmth = heat[..., 0] - heat[..., 2]
    circle = cv2.imread(str(ASSETS / "demo" / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED) == 1
    assert warmth[circle].mean() > warmth[~circle].mean() + 100


def test_pca_rgb_draws_colour_with_one_basis_over_the_run(tmp_path):
    result = pipeline.run(job_config("reduction=pca_rgb", "reduction.shared_basis=true", "backends=[local]",
                                      "layers.names=[decode_head.bottleneck]"), JobInfo(output_dir=tmp_path))
    assert result.images == DEMO_STEMS
    picture = _rgb(tmp_path / "featvis" / "local" / DEMO_STEMS[0] / "featmap" / "decode_head.bottleneck.png")
    assert picture.std(axis=(0, 1)).min() > 5  # three channels that vary: a colour picture


def test_class_reduction_without_a_class_is_refused_before_any_work(tmp_path):
    from featvis.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a class"):
        pipeline.run(job_config("reduction=class_map"), JobInfo(output_dir=tmp_path))
    assert not any(tmp_path.iterdir())
