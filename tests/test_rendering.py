import cv2
import numpy as np
import pytest
import torch

from featvis.render.align import align, crop_valid
from featvis.render.colormaps import DIVERGING, JET, LUTS, NEUTRAL
from featvis.render.draw import SCALE_BAR_GAP, draw_scale_bar, scale_bar_rows
from featvis.render.heatmap import colorize, heatmap, normalize, overlay_maps, overlay_rgb
from featvis.render.labels import overlay_labels
from featvis.render.scales import Scale, ScaleRule, SharedRange, describe, is_constant, make_scale, scale_for


def test_heatmap_is_rgb_high_values_red_low_values_blue():
    values = np.array([[0.0, 1.0]], np.float32)
    heat = heatmap(values, None, 1.0)
    low, high = heat[0, 0], heat[0, 1]
    assert low[2] > 100 and low[0] == 0  # JET minimum: blue, in RGB order
    assert high[0] > 100 and high[2] == 0  # JET maximum: red, in RGB order


def test_overlay_blends_with_alpha_over_the_rgb_image():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 1] = 200  # green
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    out = overlay_maps(maps, image, {}, alpha=0.25).picture
    heat = heatmap(align(maps[0], {}, (4, 4)), None, 1.0)
    expected = np.round(0.75 * image + 0.25 * heat)
    assert out.shape == (4, 4, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_constant_map_draws_as_zero_not_nan():
    assert normalize(np.full((3, 3), 7.0)).max() == 0
    values = np.array([[np.nan, 1.0], [0.0, 2.0]])
    assert normalize(values).tolist() == [[0, 127], [0, 255]]


def test_align_crops_padding_and_resizes_to_original():
    # The model saw the image resized to 8x12 and padded to 16x16; the map is 4x4.
    meta = {"img_shape": (8, 12), "batch_input_shape": (16, 16), "ori_shape": (20, 30)}
    fmap = torch.zeros(4, 4)
    fmap[:2, :3] = 1.0  # the image part
    fmap[2:, :] = -5.0  # padding rows
    fmap[:, 3:] = -5.0  # padding columns
    out = align(fmap, meta, (20, 30))
    assert out.shape == (20, 30)
    assert np.allclose(out, 1.0)  # no padding value leaks into the picture


def test_topk_grid_layout():
    image = np.zeros((10, 20, 3), np.uint8)
    maps = torch.rand(4, 5, 5)
    out = overlay_maps(maps, image, {}, 0.5, arrangement=(2, 2), labels=["a", "b", "c", "d"]).picture
    assert out.shape == (2 * 10 + 4, 2 * 20 + 4, 3)
    assert (out[10:14] == 255).all()  # the white gap between rows


def test_labels_use_the_palette_and_leave_ignored_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 1]], np.uint8)
    palette = [[0, 0, 0], [250, 0, 0]]
    out = overlay_labels(labels, image, palette, alpha=0.5)
    assert out[0, 1].tolist() == [175, 50, 50]
    assert out[1, 0].tolist() == [100, 100, 100]  # ignore index: the image


def test_rounding_noise_is_a_constant_map_drawn_as_the_plain_image():
    image = np.full((4, 4, 3), 90, np.uint8)
    noisy = torch.full((1, 4, 4), 1.808955192565918)
    noisy[0, 0, 0] += 2.4e-7  # what a global-pooling branch gives: one ulp of difference
    assert is_constant(noisy[0].numpy())
    assert np.array_equal(overlay_maps(noisy, image, {}, 0.5).picture, image)
    assert not is_constant(np.array([[1.0, 1.001]]))


def test_nan_drawn_as_minimum_and_all_nan_is_constant():
    assert normalize(np.array([[np.nan, 0.0], [1.0, 2.0]])).tolist() == [[0, 0], [127, 255]]
    assert is_constant(np.full((2, 2), np.nan))


# --------------------------------------------------------------------------- normalize.*

JET_LUT, DIV_LUT = LUTS[JET], LUTS[DIVERGING]


def _old_overlay(maps, image, meta, alpha):
    """featvis's heat map before normalize.* (MMEngine's draw_featmap), copied verbatim."""
    values = align(maps[0], meta, image.shape[:2])
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    cleaned = np.nan_to_num(values, nan=lo, posinf=lo, neginf=lo)
    norm = ((cleaned - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(norm, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def test_per_map_reproduces_mmengine_min_max_jet_exactly():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 12, 16, generator=gen) * 7.0 + 0.5  # positive: JET in auto mode too
    meta = {"img_shape": (40, 60), "batch_input_shape": (48, 64)}
    image = (torch.rand(50, 75, 3, generator=gen) * 255).to(torch.uint8).numpy()
    expected = _old_overlay(maps, image, meta, 0.4)
    default = overlay_maps(maps, image, meta, 0.4)
    assert np.array_equal(default.picture, expected)
    assert [s.colormap for s in default.scales] == [JET]
    rule = ScaleRule("per_map")
    drawn = overlay_maps(maps, image, meta, 0.4, scale=rule)
    (scale,) = drawn.scales
    assert np.array_equal(drawn.picture, expected)
    assert scale.colormap == JET and not scale.signed


def test_fixed_range_clips_to_the_end_colours():
    values = np.array([[-3.0, 0.0, 5.0, 10.0, 50.0]], np.float32)
    scale = scale_for(values, "fixed", range=(0.0, 10.0))
    assert (scale.lo, scale.hi, scale.colormap) == (0.0, 10.0, JET)
    rgb = colorize(values, scale)
    assert rgb[0].tolist() == [JET_LUT[0].tolist(), JET_LUT[0].tolist(), JET_LUT[127].tolist(),
                               JET_LUT[255].tolist(), JET_LUT[255].tolist()]


def test_same_scale_tells_magnitudes_apart_per_map_does_not():
    image = np.zeros((4, 8, 3), np.uint8)
    ramp = torch.linspace(0.0, 1.0, 8).repeat(4, 1)
    weak, strong = (ramp * 1.0)[None], (ramp * 10.0)[None]
    per_map = [overlay_maps(m, image, {}, 1.0).picture for m in (weak, strong)]
    assert np.array_equal(*per_map)  # MMEngine: a 10x stronger map looks the same

    fixed = scale_for(None, "fixed", range=(0.0, 10.0))
    shared_range = SharedRange()
    for m in (weak, strong):
        shared_range.update(crop_valid(m[0], {}))
    assert shared_range.range() == (0.0, 10.0)
    shared = ScaleRule("shared", shared=shared_range.range())
    for scale in (fixed, shared):
        out_weak, out_strong = (overlay_maps(m, image, {}, 1.0, scale=scale).picture for m in (weak, strong))
        assert out_strong[0, -1].tolist() == JET_LUT[255].tolist()  # strong reaches the top colour
        assert out_weak[0, -1].tolist() == JET_LUT[25].tolist()  # weak stops at a tenth of it
        assert out_weak[0, 0].tolist() == out_strong[0, 0].tolist() == JET_LUT[0].tolist()


def test_percentile_ignores_a_single_outlier():
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    values[9, 9] = 1e6  # one outlier among 0..98
    scale = scale_for(values, "percentile", percentiles=(0.0, 98.0))
    assert scale.lo == 0.0 and scale.hi == pytest.approx(97.02)  # not 1e6
    rgb = colorize(values, scale)
    assert rgb[9, 9].tolist() == JET_LUT[255].tolist()  # the outlier is clipped to the top colour
    assert rgb[4, 9].tolist() == JET_LUT[int(49 * 255 / 97.02)].tolist()  # the middle stays mid-scale
    per_map = colorize(values, scale_for(values, "per_map"))
    assert (per_map[:9] == JET_LUT[0]).all()  # min-max: everything but the outlier is bottom blue


def test_signed_map_in_auto_mode_is_diverging_with_zero_neutral():
    values = np.array([[-2.0, 0.0, 1.0]], np.float32)
    scale = scale_for(values, "per_map", colormap="auto")
    assert (scale.lo, scale.hi, scale.signed, scale.colormap) == (-2.0, 2.0, True, DIVERGING)
    rgb = colorize(values, scale)
    assert rgb[0, 0].tolist() == DIV_LUT[0].tolist() and rgb[0, 0, 2] > 2 * rgb[0, 0, 0]  # blue
    assert tuple(rgb[0, 1]) == NEUTRAL  # 0: the neutral middle
    assert rgb[0, 2].tolist() == DIV_LUT[191].tolist() and rgb[0, 2, 0] > 2 * rgb[0, 2, 2]  # red
    assert tuple(DIV_LUT[127]) == tuple(DIV_LUT[128]) == NEUTRAL
    jet = scale_for(values, "per_map", colormap="jet")  # asked for: JET over [-2, 1]
    assert (jet.lo, jet.hi, jet.colormap) == (-2.0, 1.0, JET)
    assert describe(make_scale(-1.2, 3.4, "auto", "shared over run")) == \
        "range [-3.4, 3.4] (shared over run), diverging"


def test_colour_tables_jet_is_opencvs_diverging_is_matplotlibs_rdbu_with_an_exact_centre():
    import matplotlib

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    assert np.array_equal(JET_LUT, cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, 0, ::-1])  # MMEngine's JET
    assert NEUTRAL == (247, 247, 247)  # ColorBrewer RdBu's centre
    assert tuple(DIV_LUT[127]) == tuple(DIV_LUT[128]) == NEUTRAL  # both middle entries, whatever the rounding
    rdbu = matplotlib.colormaps["RdBu_r"]  # the source: each half spans exactly half of it
    for index, x in [(0, 0.0), (64, 64 / 254), (127, 0.5), (128, 0.5), (200, 199 / 254), (255, 1.0)]:
        expected = np.array(rdbu.resampled(255)(round(x * 254))[:3]) * 255
        assert np.abs(DIV_LUT[index] - expected).max() <= 0.5, index
    lower, upper = DIV_LUT[:128].astype(int), DIV_LUT[128:].astype(int)
    assert (lower[:127, 2] > lower[:127, 0]).all() and (upper[1:, 0] > upper[1:, 2]).all()  # blue low, red high
    assert (np.diff(lower.sum(1)) >= 0).all() and (np.diff(upper.sum(1)) <= 0).all()  # lightest at the centre
    assert (np.diff(lower[:, 0]) >= 0).all() and (np.diff(upper[:, 2]) <= 0).all()  # red rises, blue falls


@pytest.mark.parametrize("scale", [None, make_scale(0.0, 10.0, "jet", "fixed"),
                                   ScaleRule("percentile")])
def test_constant_and_nan_unchanged_under_any_scale(scale):
    image = np.full((8, 8, 3), 90, np.uint8)
    constant = torch.full((1, 4, 4), 3.0)
    drawn = overlay_maps(constant, image, {}, 0.5, scale=scale, scale_bar=True)
    assert np.array_equal(drawn.picture, image) and drawn.scales == [None]  # plain image, no bar
    values = np.array([[np.nan, 1.0], [2.0, np.inf]], np.float32)
    used = scale if isinstance(scale, Scale) else scale_for(values, "per_map")
    rgb = colorize(values, used)
    assert rgb[0, 0].tolist() == rgb[1, 1].tolist() == rgb[0, 1].tolist()  # NaN, Inf: the minimum


def test_scale_bar_is_drawn_below_the_map_and_every_map_row_is_intact():
    h, w = 96, 128
    image = np.full((h, w, 3), 60, np.uint8)
    maps = torch.linspace(-1.0, 3.0, 32).repeat(24, 1)[None]
    rule = ScaleRule("per_map")
    plain = overlay_maps(maps, image, {}, 0.5, scale=rule).picture
    drawn = overlay_maps(maps, image, {}, 0.5, scale=rule, scale_bar=True)
    barred, (scale,) = drawn.picture, drawn.scales
    rows = scale_bar_rows(h, w)
    assert plain.shape == (h, w, 3) and barred.shape == (h + rows, w, 3)  # the picture grows by the bar
    assert 8 <= rows < h // 3
    assert np.array_equal(barred[:h], plain)  # every row of the map, the bottom ones too, as drawn without it
    assert (barred[h:h + SCALE_BAR_GAP] == 255).all()  # a white gap, then the strip
    bar = 8  # rows of the strip at this height
    strip = DIV_LUT[np.rint(np.linspace(0, 255, w)).astype(int)]
    top = h + SCALE_BAR_GAP
    assert np.array_equal(barred[top:top + bar], np.broadcast_to(strip, (bar, w, 3)))
    text_band = barred[top + bar:]
    assert text_band.shape[0] > 0 and (text_band < 100).all(axis=-1).any()  # dark numbers on white, under it
    assert (text_band[:, w // 3: w // 3 + 4] == 255).all()  # between lo and 0: nothing but white
    assert describe(scale) == "range [-3, 3] (per map), diverging"


@pytest.mark.parametrize("hw", [(20, 30), (48, 64), (192, 256), (1024, 2048)])
def test_scale_bar_adds_its_rows_below_and_leaves_the_picture_alone(hw):
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    drawn = draw_scale_bar(canvas.copy(), make_scale(-1234.5, 0.0000456, "diverging", "fixed"))
    assert drawn.shape == (hw[0] + scale_bar_rows(*hw), hw[1], 3)
    assert np.array_equal(drawn[: hw[0]], canvas)
    assert (drawn[hw[0]:] != 255).any()  # something was drawn in the added rows


def test_topk_grid_tiles_stay_aligned_when_one_is_constant():
    h, w = 64, 96
    image = np.full((h, w, 3), 60, np.uint8)
    varying = torch.linspace(0.0, 1.0, 16).repeat(8, 1)
    maps = torch.stack([varying, torch.full((8, 16), 2.0), varying * 3])
    drawn = overlay_maps(maps, image, {}, 0.5, arrangement=(1, 3), scale=ScaleRule("per_map"), scale_bar=True)
    rows = scale_bar_rows(h, w)
    picture = drawn.picture
    assert picture.shape == (h + rows, 3 * w + 2 * 4, 3) and drawn.scales[1] is None
    constant = picture[:, w + 4: 2 * w + 4]
    assert np.array_equal(constant[:h], image) and (constant[h:] == 255).all()  # plain image, white below
    first = picture[:, :w]
    alone = overlay_maps(maps[:1], image, {}, 0.5, scale=ScaleRule("per_map"), scale_bar=True).picture
    assert np.array_equal(first, alone)  # a tile of the grid is the map drawn alone, bar included


def test_overlay_rgb_is_rgb_order_without_padding():
    meta = {"img_shape": (2, 2), "batch_input_shape": (4, 4)}  # the map's right and bottom half: padding
    maps3 = torch.full((3, 4, 4), 5.0)
    maps3[:, 2:, :] = float("nan")
    maps3[0, :2, :2], maps3[1, :2, :2], maps3[2, :2, :2] = 1.0, 0.2, 0.0
    image = np.zeros((6, 6, 3), np.uint8)
    out = overlay_rgb(maps3, image, meta, alpha=1.0)
    assert out.shape == (6, 6, 3)
    assert (out.reshape(-1, 3) == [255, 51, 0]).all()  # red, some green, no blue; no padding


def test_shared_range_percentiles_exact_while_sampled_stays_bounded():
    exact = SharedRange(percentiles=(10.0, 90.0))
    exact.update(torch.arange(0.0, 50.0))
    exact.update(np.array([np.nan, *range(50, 101)], np.float32))
    assert exact.range() == (10.0, 90.0)
    sampled = SharedRange(percentiles=(10.0, 90.0), sample_size=4000)
    for i in range(10):
        sampled.update(np.arange(i * 10000, (i + 1) * 10000, dtype=np.float32))
    lo, hi = sampled.range()
    assert sampled.count == 100000 and sampled._sample.size == 4000
    assert abs(lo - 10000) < 2500 and abs(hi - 90000) < 2500
    assert SharedRange().range() is None


@pytest.mark.parametrize("override, message", [
    # unknown normalize.mode / normalize.colormap: refused while composing (tests/test_config.py)
    ("normalize.range=[1,0]", "normalize.range=[1.0, 0.0] must be [low, high]"),
    ("normalize.range=[0,1,2]", "normalize.range=[0.0, 1.0, 2.0] must be [low, high]"),
    ("normalize.percentiles=[5,200]", "normalize.percentiles=[5.0, 200.0] must be"),
    ("normalize.percentiles=[50,50]", "normalize.percentiles=[50.0, 50.0] must be"),
])
def test_validate_rejects_bad_normalize_values(override, message):
    from featvis.config.schema import validate
    from featvis.errors import ConfigError
    from tests.helpers import compose_cfg

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        validate(compose_cfg(override))
    validate(compose_cfg("normalize.mode=fixed", "normalize.range=[-2,2]", "normalize.colormap=diverging"))
