"""compare, the job side: linear CKA, the sketch a job keeps, share_forward with sketches, layer similarity."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmseg.apis import inference_model

from featvis.compare.cka import Accumulator, linear_cka
from featvis.compare.layers import LayerSimilarity, read_csv
from featvis.compare.sketch import SKETCH_FILE, Sketch, SketchWriter, positions, sample
from featvis.config.job import JobInfo
from featvis.data.paths import ASSETS
from featvis.model import cache as model_cache
from featvis.pipeline import job as pipeline
from featvis.pipeline.sketches import SIMILARITY_CSV, SIMILARITY_IMAGE, SIMILARITY_PANEL, SIMILARITY_PNG
from featvis.render import panels as render_panels
from featvis.sweep.plan import share_key
from tests.helpers import DEMO_IMAGE, compose_cfg, job_config, run_planned_sweep

LOCAL = ("backends=[local]", "image=featvis::demo/images")
STEMS = sorted(p.stem for p in (ASSETS / "demo" / "images").glob("*.png"))
TWO_LAYERS = "layers.names=[backbone.layer4,decode_head.conv_seg]"


def _run(out: Path, *overrides: str, swept=()):
    return pipeline.run(job_config(*LOCAL, *overrides), JobInfo(output_dir=out, swept=list(swept)))


def _sketch(out: Path) -> Sketch:
    return Sketch(out / "featvis" / SKETCH_FILE)


# ------------------------------------------------------------------------------------ linear CKA

def _features(n=500, p=12, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p))


def test_cka_of_the_same_features_is_one():
    x = _features()
    assert abs(linear_cka(x, x) - 1.0) < 1e-5


def test_cka_ignores_isotropic_scaling_and_orthogonal_transforms_of_the_channels():
    x, y = _features(seed=0), _features(seed=1)
    y = 0.5 * x @ np.random.default_rng(2).normal(size=(12, 12)) + y  # related to x, not the same
    base = linear_cka(x, y)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))
    assert 0.1 < base < 0.99
    assert abs(linear_cka(7.5 * x, y) - base) < 1e-6
    assert abs(linear_cka(x, y @ q) - base) < 1e-6
    assert abs(linear_cka(x @ q, 0.01 * y) - base) < 1e-6


def test_cka_of_unrelated_features_is_low():
    assert linear_cka(_features(n=4000, seed=0), _features(n=4000, p=20, seed=1)) < 0.05


def test_the_accumulator_fed_image_by_image_equals_cka_on_the_stacked_rows():
    x, y = _features(n=600, p=8, seed=4), _features(n=600, p=5, seed=5)
    y[:, :3] += x[:, :3]
    acc = Accumulator()
    for start in range(0, 600, 256):  # images of 256 pixels, the last one shorter
        acc.add(x[start:start + 256], y[start:start + 256])
    assert abs(acc.value() - linear_cka(x, y)) < 1e-9


def test_layer_similarity_is_symmetric_with_ones_on_the_diagonal_and_cka_off_it():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 256, 8))
    feats = {"a": a, "b": a @ rng.normal(size=(8, 6)) + 0.3 * rng.normal(size=(3, 256, 6)),
             "c": rng.normal(size=(3, 256, 4)), "flat": np.ones((3, 256, 2))}
    similarity = LayerSimilarity()
    for image in range(3):
        similarity.add({name: f[image] for name, f in feats.items()})
    m = similarity.matrix()
    assert similarity.layers == ["a", "b", "c", "flat"]
    np.testing.assert_allclose(m[:3, :3], m[:3, :3].T)
    np.testing.assert_allclose(np.diag(m)[:3], 1.0)
    assert np.isnan(m[3]).all()  # a layer that never varies: nothing to compare
    stacked = {name: f.reshape(-1, f.shape[-1]) for name, f in feats.items()}
    assert abs(m[0, 1] - linear_cka(stacked["a"], stacked["b"])) < 1e-9
    assert m[0, 2] < 0.1 < 0.5 < m[0, 1]


def test_layer_similarity_refuses_sums_that_would_not_fit_in_one_line(monkeypatch):
    from featvis.compare import layers
    from featvis.errors import ConfigError

    monkeypatch.setattr(layers, "MAX_BYTES", 8 * (64 * 64 * 3 - 1))  # one pair of 64 channels: just over
    similarity = LayerSimilarity()
    similarity.add({"a": np.ones((4, 32)), "b": np.ones((4, 32))})  # fits
    with pytest.raises(ConfigError, match=r"^compare.layer_similarity: 3 layers .* choose fewer") as err:
        similarity.add({"a": np.ones((4, 32)), "b": np.ones((4, 32)), "c": np.ones((4, 64))})
    assert "\n" not in str(err.value)


def test_a_streamed_sketch_reads_back_as_one_written_at_once(tmp_path):
    rng = np.random.default_rng(0)
    writers = [SketchWriter(16, 0, meta={"job": "x"}), SketchWriter(16, 0, meta={"job": "x"}, stream=tmp_path / "s")]
    for writer in writers:
        for stem in ("a", "b"):
            writer.add(stem, "layer", rng.normal(size=(16, 3)), rng.normal(size=(4, 5)))
    writers[0].write(tmp_path / "held")
    assert writers[1].write(tmp_path / "streamed") == tmp_path / "streamed" / SKETCH_FILE
    held, streamed = Sketch(tmp_path / "held" / SKETCH_FILE), Sketch(tmp_path / "streamed" / SKETCH_FILE)
    assert held.meta == streamed.meta and held.images == streamed.images == ["a", "b"]
    assert streamed.features("b", "layer").dtype == np.float16 and streamed.map("a", "layer").shape == (4, 5)
    assert not (tmp_path / "s" / SKETCH_FILE).exists()  # moved where it was asked for
    assert SketchWriter(16, 0, stream=tmp_path / "empty").write(tmp_path / "empty") is None


# ------------------------------------------------------------------------------------ the job's sketch

def _layer_output(layer: str, image: Path) -> np.ndarray:
    """What `layer` of the demo model gives on `image`, by a forward hook of our own."""
    cfg = compose_cfg()
    loaded = model_cache.load(cfg.model.config, cfg.model.checkpoint, cfg.device)
    seen = []
    module = loaded.model.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        inference_model(loaded.model, cv2.imread(str(image)))
    finally:
        handle.remove()
    return seen[0][0]


def test_a_job_with_compare_sketch_keeps_each_layers_full_features_at_the_shared_positions(tmp_path):
    result = _run(tmp_path / "a", "compare.sketch=true", TWO_LAYERS)
    sketch = _sketch(tmp_path / "a")
    assert sketch.images == result.images == STEMS
    assert sketch.layers == ["backbone.layer4", "decode_head.conv_seg"]
    assert sketch.meta["pixels"] == 256 and sketch.meta["seed"] == 0 and sketch.meta["reduction"] == "select_max"
    assert sketch.meta["checkpoint"] == "featvis::checkpoints/demo_pspnet.pth" and sketch.meta["job"]
    for layer in sketch.layers:
        feat = _layer_output(layer, ASSETS / "demo" / "images" / f"{STEMS[0]}.png")  # (C, H, W)
        rows = sketch.features(STEMS[0], layer)
        assert rows.shape == (256, feat.shape[0]) and rows.dtype == np.float16  # P rows, every channel
        np.testing.assert_allclose(rows.astype(np.float32), sample(feat, positions(256, 0)).astype(np.float32),
                                   rtol=1e-2, atol=1e-3)
        assert sketch.map(STEMS[0], layer).shape == tuple(feat.shape[-2:])  # the reduced map, at its own size

    other = _run(tmp_path / "b", "compare.sketch=true", "layers.names=[decode_head.conv_seg]")
    assert np.array_equal(_sketch(tmp_path / "b").features(STEMS[1], "decode_head.conv_seg"),
                          sketch.features(STEMS[1], "decode_head.conv_seg"))  # the same positions in both jobs
    assert other.images == STEMS
    _run(tmp_path / "c", "compare.sketch=true", "compare.seed=1", "layers.names=[decode_head.conv_seg]")
    assert not np.array_equal(_sketch(tmp_path / "c").features(STEMS[1], "decode_head.conv_seg"),
                              sketch.features(STEMS[1], "decode_head.conv_seg"))  # another seed: other positions


def test_a_single_run_with_defaults_keeps_no_sketch_and_a_checkpoint_sweep_does(tmp_path, monkeypatch):
    from featvis.compare import sketch as sketch_module

    calls = []
    real = sketch_module.sample
    monkeypatch.setattr("featvis.record.recorder.sample", lambda *a: calls.append(1) or real(*a))
    _run(tmp_path / "single", f"image={DEMO_IMAGE}", swept=["layers"])
    assert not (tmp_path / "single" / "featvis" / SKETCH_FILE).exists() and calls == []  # nothing sampled
    _run(tmp_path / "sweep", f"image={DEMO_IMAGE}", swept=["model.checkpoint"])  # compare.sketch=null
    assert _sketch(tmp_path / "sweep").images == [DEMO_IMAGE.stem] and calls
    _run(tmp_path / "off", f"image={DEMO_IMAGE}", "compare.sketch=false", swept=["model.checkpoint"])
    assert not (tmp_path / "off" / "featvis" / SKETCH_FILE).exists()


def test_a_failed_job_leaves_no_sketch_among_its_results(tmp_path, monkeypatch):
    real = render_panels.overlay_maps
    seen = []

    def fail_on_second_image(maps, image, *args, **kwargs):
        seen.append(image.shape)
        if len(seen) > 1:
            raise RuntimeError("disk full")
        return real(maps, image, *args, **kwargs)

    monkeypatch.setattr(render_panels, "overlay_maps", fail_on_second_image)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tmp_path, "compare.sketch=true", "layers.names=[decode_head.conv_seg]")
    assert not (tmp_path / "featvis").exists()
    assert not list(tmp_path.glob(f"featvis/**/{SKETCH_FILE}"))


def test_gradcam_keeps_no_sketch_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _run(tmp_path, f"image={DEMO_IMAGE}", "compare.sketch=true", "reduction=gradcam",
             "reduction.target_class=0", "layers.names=[decode_head.bottleneck]")
    assert not (tmp_path / "featvis" / SKETCH_FILE).exists()
    assert sum("no sketch" in r.getMessage() for r in caplog.records) == 1


def test_stitched_slide_window_maps_have_their_sketch(tmp_path):
    config = tmp_path / "demo_slide.py"
    config.write_text(f"_base_ = [{str(ASSETS / 'configs' / 'demo_pspnet.py')!r}]\n"
                      "model = dict(test_cfg=dict(mode='slide', crop_size=(128, 128), stride=(96, 96)))\n")
    _run(tmp_path / "job", f"model.config={config}", "model.checkpoint=featvis::checkpoints/demo_pspnet.pth",
         f"image={DEMO_IMAGE}", "compare.sketch=true", "layers.names=[decode_head.bottleneck]")
    rows = _sketch(tmp_path / "job").features(DEMO_IMAGE.stem, "decode_head.bottleneck")
    assert rows.shape == (256, 32) and np.isfinite(rows).all()


# ------------------------------------------------------------------------------------ share_forward

def _run_sweep(sweep: Path, jobs, *extra):
    return run_planned_sweep(sweep, jobs, *LOCAL, *extra)


def test_jobs_that_share_a_forward_keep_the_same_sketch_as_alone(tmp_path):
    jobs = [["layers.names=[decode_head.conv_seg]"], [TWO_LAYERS]]
    results = _run_sweep(tmp_path / "sweep", jobs, "compare.sketch=true")
    assert [(r.forwards, r.reused) for r in results] == [(3, 0), (0, 3)]  # the second job ran no model
    first, second = (_sketch(tmp_path / "sweep" / str(i)) for i in range(2))
    _run(tmp_path / "alone", "compare.sketch=true", TWO_LAYERS)
    alone = _sketch(tmp_path / "alone")
    assert second.layers == alone.layers and second.images == alone.images
    for stem in STEMS:
        for layer in alone.layers:
            assert np.array_equal(second.features(stem, layer), alone.features(stem, layer)), (stem, layer)
            assert np.array_equal(second.map(stem, layer), alone.map(stem, layer))
        seg = "decode_head.conv_seg"
        assert np.array_equal(first.features(stem, seg), alone.features(stem, seg))


def test_the_share_key_tells_jobs_with_and_without_sketches_and_other_positions_apart(tmp_path):
    off, on = share_key(compose_cfg("compare.sketch=false")), share_key(compose_cfg("compare.sketch=true"))
    null = share_key(compose_cfg())  # compare.sketch=null: the sweep decides, the same for all its jobs
    assert len({off, on, null}) == 3
    assert share_key(compose_cfg("compare.layer_similarity=true")) == on
    assert share_key(compose_cfg("compare.sketch=true", "compare.pixels=64")) != on
    assert share_key(compose_cfg("compare.sketch=true", "compare.seed=3")) != on
    assert share_key(compose_cfg("compare.sketch=false", "compare.pixels=64")) == off  # no sketch: no positions

    results = _run_sweep(tmp_path / "sweep", [["compare.sketch=false"], ["compare.sketch=true"]],
                         f"image={DEMO_IMAGE}")
    assert [(r.forwards, r.reused) for r in results] == [(1, 0), (1, 0)]  # two groups of one: each runs its own
    assert _sketch(tmp_path / "sweep" / "1").images == [DEMO_IMAGE.stem]


# ------------------------------------------------------------------------------------ layer similarity

def test_layer_similarity_writes_a_symmetric_table_and_a_picture_logged_to_the_backends(tmp_path):
    result = _run(tmp_path, "compare.layer_similarity=true")  # the decoder preset: six maps
    folder = tmp_path / "featvis"
    layers, matrix = read_csv(folder / SIMILARITY_CSV)
    assert layers == _sketch(tmp_path).layers and len(layers) == 6
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    assert ((0 <= matrix) & (matrix <= 1)).all()
    picture = cv2.imread(str(folder / SIMILARITY_PNG))
    assert picture is not None and min(picture.shape[:2]) > 300
    logged = folder / "local" / SIMILARITY_IMAGE / f"{SIMILARITY_PANEL}.png"
    assert np.array_equal(cv2.imread(str(logged)), picture)
    assert result.images == STEMS  # not an image of the job
