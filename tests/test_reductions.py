from pathlib import Path

import pytest
import torch

from featvis.errors import ReductionError
from featvis.reduce.class_map import class_weights
from featvis.reduce.pca import PcaRgb, PcaRgbConfig, pca_rgb
from featvis.reduce.pca_basis import PCA_SHARED_Z, PcaBases, PcaBasis
from featvis.reduce.registry import create, names


def _feat() -> torch.Tensor:
    feat = torch.zeros(3, 4, 4)
    feat[0, 0, 0] = 100.0  # the largest pixel, small sum
    feat[1] = 10.0  # the largest spatial sum: 160
    feat[2] = 5.0  # sum 80
    return feat


def test_select_max_picks_largest_spatial_sum_not_largest_pixel():
    out = create("select_max")(_feat())
    assert out.channels == [1]
    assert torch.equal(out.maps, torch.full((1, 4, 4), 10.0))


def test_squeeze_mean_is_the_channel_mean():
    feat = _feat()
    out = create("squeeze_mean")(feat)
    assert out.maps.shape == (1, 4, 4)
    assert torch.allclose(out.maps[0], feat.mean(0))
    assert out.channels is None


def test_topk_orders_channels_by_spatial_sum_and_caps_at_channel_count():
    out = create("topk", topk=2)(_feat())
    assert out.channels == [1, 0]  # sums 160, 100 (channel 2 sums to 80)
    assert out.maps.shape == (2, 4, 4)
    assert create("topk", topk=10)(_feat()).maps.shape == (3, 4, 4)


def test_result_is_a_float32_copy_not_a_view_of_the_feature_map():
    feat = torch.randn(64, 8, 8, dtype=torch.float16)
    out = create("select_max")(feat)
    assert out.maps.dtype == torch.float32
    # a view would keep all 64 channels alive
    assert out.maps.untyped_storage().nbytes() == 8 * 8 * 4


def test_registry_holds_mmengine_modes():
    assert {"select_max", "squeeze_mean", "topk"} <= set(names())


# --------------------------------------------------------------- per-pixel statistics

def _two_pixels() -> torch.Tensor:
    """(2, 1, 2): pixel 0 holds channels (3, 4), pixel 1 holds (-1, -1)."""
    return torch.tensor([[[3.0, -1.0]], [[4.0, -1.0]]])


def test_channel_max_is_the_per_pixel_maximum():
    out = create("channel_max")(_two_pixels())
    assert torch.equal(out.maps, torch.tensor([[[4.0, -1.0]]]))
    assert out.channels is None


def test_l2_norm_is_the_per_pixel_euclidean_norm():
    out = create("l2_norm")(_two_pixels())
    assert torch.allclose(out.maps, torch.tensor([[[5.0, 2 ** 0.5]]]))


def test_std_is_the_population_standard_deviation_over_channels():
    out = create("std")(_two_pixels())
    assert torch.allclose(out.maps, torch.tensor([[[0.5, 0.0]]]))  # |3 - 4| / 2; equal channels
    assert torch.equal(create("std")(torch.ones(1, 2, 2)).maps, torch.zeros(1, 2, 2))  # C=1: 0, not NaN


def test_registry_holds_the_new_reductions():
    assert {"channel_max", "l2_norm", "std", "pca_rgb", "class_map", "gradcam"} <= set(names())


def test_gradcam_is_registered_but_refuses_to_run_in_a_hook(demo):
    with pytest.raises(ReductionError, match="gradcam_maps"):
        create("gradcam", demo.model, target_class="1")(torch.zeros(2, 2, 2))


# --------------------------------------------------------------------------- pca_rgb

DIRECTION = torch.tensor([0.1, -0.3, 0.8, 0.2, -0.4, 0.2])


def _line_map(h: int = 8, w: int = 8) -> tuple:
    """Pixels spread along DIRECTION (coordinate t), plus small fixed noise: (C, H, W), t."""
    generator = torch.Generator().manual_seed(1)
    t = torch.linspace(-3, 3, h * w)[torch.randperm(h * w, generator=generator)]
    noise = 0.64 / (h * w) * torch.randn(6, h * w, generator=generator)  # << the spacing of t
    direction = DIRECTION / DIRECTION.norm()
    feat = direction[:, None] * t[None] + noise + 5.0  # an offset: centring matters
    return feat.reshape(6, h, w), t


def _assert_monotone(values: torch.Tensor, t: torch.Tensor, increasing: bool = True) -> None:
    ordered = values.reshape(-1)[torch.argsort(t)]
    steps = ordered.diff()
    assert (steps >= -1e-6).all() if increasing else (steps <= 1e-6).all()


def test_pca_rgb_first_component_follows_the_direction_of_largest_variance():
    feat, t = _line_map()
    out = create("pca_rgb")(feat)
    assert out.maps.shape == (3, 8, 8) and out.maps.dtype == torch.float32
    assert out.maps.min() >= 0 and out.maps.max() <= 1
    # DIRECTION's largest loading (0.8) is positive, so the first map increases with t
    _assert_monotone(out.maps[0], t, increasing=True)
    assert out.maps[0].max() == 1 and out.maps[0].min() == 0  # 1st/99th percentiles clipped
    assert out.note and "%" in out.note


def test_pca_rgb_sign_does_not_depend_on_the_data_sign_and_runs_are_identical():
    feat, t = _line_map()
    flipped = -feat
    a, b = create("pca_rgb")(feat), create("pca_rgb")(feat)
    assert torch.equal(a.maps, b.maps)
    # negated data: the component keeps its sign, so the coordinate (and colour) flips
    c = create("pca_rgb")(flipped)
    _assert_monotone(c.maps[0], t, increasing=False)
    assert torch.allclose(c.maps[0], 1 - a.maps[0], atol=1e-4)


def test_pca_rgb_subsamples_large_maps_deterministically_and_randomized_path_agrees():
    feat, t = _line_map(40, 50)
    out = PcaRgb(PcaRgbConfig("pca_rgb"), max_pixels=256)(feat)  # fitted on a seeded 256-pixel subsample
    assert torch.equal(out.maps, PcaRgb(PcaRgbConfig("pca_rgb"), max_pixels=256)(feat).maps)
    _assert_monotone(out.maps[0], t)


def test_pca_rgb_randomized_path_for_many_channels_matches_the_exact_one():
    generator = torch.Generator().manual_seed(4)
    # 64 channels, three latent directions of decreasing strength, plus noise
    latent = torch.randn(3, 30 * 20, generator=generator) * torch.tensor([[6.0], [3.0], [1.5]])
    feat = (torch.randn(64, 3, generator=generator) @ latent + 0.1 * torch.randn(64, 600, generator=generator))
    feat = feat.reshape(64, 30, 20)
    exact = create("pca_rgb")(feat)
    randomized = PcaRgb(PcaRgbConfig("pca_rgb"), exact_channels=16)(feat)  # C=64 > 16: subspace iteration
    assert torch.equal(randomized.maps, PcaRgb(PcaRgbConfig("pca_rgb"), exact_channels=16)(feat).maps)
    assert torch.allclose(randomized.maps, exact.maps, atol=1e-3)
    shared_exact, shared_randomized = PcaBasis(), PcaBasis(exact_channels=16)
    shared_exact.update(feat)
    shared_randomized.update(feat)
    assert torch.allclose(shared_randomized.fit().components, shared_exact.fit().components, atol=1e-6)


def test_pca_rgb_of_fewer_than_three_channels_or_a_constant_map_is_mid_grey():
    out = create("pca_rgb")(torch.arange(8.0).reshape(1, 2, 4))
    assert out.maps.shape == (3, 2, 4)
    assert torch.equal(out.maps[1:], torch.full((2, 2, 4), 0.5))
    assert torch.equal(create("pca_rgb")(torch.ones(4, 3, 3)).maps, torch.full((3, 3, 3), 0.5))
    # rank-1 data: components 2 and 3 hold float32 rounding only (variance ~1e-13): not stretched
    direction, t = torch.tensor([0.1, 0.7, 3.3, -1.9]), torch.randn(63, generator=torch.Generator().manual_seed(0))
    rank1 = (direction[:, None] * (t[None] + 7)).reshape(4, 7, 9)
    for out in (create("pca_rgb")(rank1), pca_rgb(rank1, basis=_fitted(rank1))):
        assert torch.equal(out.maps[1:], torch.full((2, 7, 9), 0.5))
        assert out.maps[0].max() > 0.9 and out.maps[0].min() < 0.1


def _fitted(*maps: torch.Tensor) -> PcaBasis:
    basis = PcaBasis()
    for feat in maps:
        basis.update(feat)
    basis.fit()
    return basis


def _two_maps() -> tuple:
    generator = torch.Generator().manual_seed(2)
    mix = torch.randn(5, 5, generator=generator)
    a = (mix @ torch.randn(5, 6 * 7, generator=generator)).reshape(5, 6, 7) + 1.0
    b = (mix @ (3 * torch.randn(5, 16, generator=generator))).reshape(5, 4, 4) - 2.0
    return a, b


def test_pca_basis_streaming_equals_the_pca_of_the_concatenated_pixels():
    a, b = _two_maps()
    basis = PcaBasis()
    basis.update(a)
    basis.update(b)
    fit = basis.fit()

    pixels = torch.cat([a.reshape(5, -1), b.reshape(5, -1)], dim=1).t().double()
    mean = pixels.mean(0)
    cov = (pixels - mean).t() @ (pixels - mean) / pixels.shape[0]
    values, vectors = torch.linalg.eigh(cov)
    top = vectors[:, -3:].flip(1).t()
    top = top * torch.sign(top.gather(1, top.abs().argmax(1, keepdim=True)))  # largest loading > 0
    assert torch.allclose(fit.mean, mean)
    assert torch.allclose(fit.components, top, atol=1e-5)  # scatter products run in float32
    assert torch.allclose(fit.variances, values[-3:].flip(0))
    assert torch.allclose(fit.hi, PCA_SHARED_Z * values[-3:].flip(0).sqrt())
    assert torch.allclose(fit.lo, -fit.hi)


def test_pca_rgb_with_a_shared_basis_gives_the_same_colour_to_the_same_vector_in_every_map():
    a, b = _two_maps()
    b[:, 0, 0] = a[:, 0, 0]  # one feature vector present in both maps
    bases = PcaBases()
    assert bases.update(a, layer="x").maps.shape == (0, 6, 7)  # usable as a first-pass reduce_fn
    bases.update(b, layer="x")
    bases.fit()
    out_a = pca_rgb(a, basis=bases, layer="x")
    out_b = pca_rgb(b, basis=bases["x"])
    assert out_a.maps.shape == (3, 6, 7) and out_b.maps.shape == (3, 4, 4)
    assert torch.allclose(out_a.maps[:, 0, 0], out_b.maps[:, 0, 0])
    assert out_a.maps.min() >= 0 and out_a.maps.max() <= 1
    # per-map scaling would not: each map would be stretched to its own range
    assert not torch.allclose(create("pca_rgb")(a).maps[:, 0, 0], create("pca_rgb")(b).maps[:, 0, 0])


def test_pca_basis_refuses_mixed_channel_counts_and_unknown_layers():
    basis = PcaBasis()
    basis.update(torch.randn(4, 3, 3))
    with pytest.raises(ReductionError, match="one basis per layer"):
        basis.update(torch.randn(5, 3, 3))
    with pytest.raises(ReductionError, match="no basis for layer 'y'"):
        pca_rgb(torch.randn(4, 3, 3), basis=PcaBases(), layer="y")
    with pytest.raises(ReductionError, match="before any update"):
        PcaBasis().fit()


# ------------------------------------------------------------------------- class_map

@pytest.fixture(scope="module")
def demo():
    from featvis.model.load import load_model
    return load_model("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu")


def test_class_weights_resolve_names_indices_and_refuse_unknown_classes(demo):
    classes = demo.dataset_meta["classes"]
    assert list(classes) == ["background", "circle", "square", "triangle"]
    conv = demo.model.decode_head.conv_seg
    opts = class_weights(demo.model, "circle", classes)
    assert torch.equal(opts.weight, conv.weight.detach()[1, :, 0, 0])
    assert opts.bias == pytest.approx(float(conv.bias.detach()[1]))
    assert opts.conv_seg_input == "decode_head.bottleneck"
    assert class_weights(demo.model, "1", classes).index == 1
    assert class_weights(demo.model, "Square", classes).name == "square"
    with pytest.raises(ReductionError, match=r"'cirle' is not a class.*closest: circle.*0=background, "
                                             r"1=circle, 2=square, 3=triangle"):
        class_weights(demo.model, "cirle", classes)
    with pytest.raises(ReductionError, match="out of range"):
        class_weights(demo.model, "7", classes)
    with pytest.raises(ReductionError, match="set reduction.target_class"):
        class_weights(demo.model, None, classes)


def test_class_map_is_the_conv_seg_row_applied_to_the_feature_map(demo):
    conv = demo.model.decode_head.conv_seg
    class_map = create("class_map", demo.model, target_class="triangle")
    feat = torch.randn(32, 5, 6, generator=torch.Generator().manual_seed(3))
    out = class_map(feat)
    w, b = conv.weight.detach()[3, :, 0, 0], conv.bias.detach()[3]
    assert out.maps.shape == (1, 5, 6)
    assert torch.allclose(out.maps[0], torch.einsum("c,chw->hw", w, feat) + b, atol=1e-5)
    with torch.no_grad():  # ... which is the class's logit, as conv_seg computes it
        assert torch.allclose(out.maps[0], conv(feat[None])[0, 3], atol=1e-5)


def test_class_map_refuses_a_layer_that_does_not_feed_conv_seg(demo):
    class_map = create("class_map", demo.model, target_class="circle")
    with pytest.raises(ReductionError, match=r"feeds decode_head.conv_seg \(C=32\), such as "
                                             r"decode_head.bottleneck; this layer has C=128"):
        class_map(torch.zeros(128, 4, 4))
    with pytest.raises(ReductionError, match="target_class"):
        create("class_map", demo.model)(torch.zeros(32, 4, 4))


@pytest.mark.parametrize("scene", ["scene_000", "scene_001"])
def test_class_map_of_circle_outlines_the_circle_on_demo_scenes(demo, scene):
    cv2 = pytest.importorskip("cv2")
    from mmseg.apis import inference_model

    from featvis.record.layers import select_layers
    from featvis.record.recorder import FeatureRecorder

    assets = Path(__file__).resolve().parents[1] / "featvis" / "assets" / "demo"
    image = cv2.imread(str(assets / "images" / f"{scene}.png"))
    circle = cv2.imread(str(assets / "masks" / f"{scene}.png"), cv2.IMREAD_UNCHANGED) == 1
    layers = select_layers(demo.model, ["decode_head.bottleneck"])
    with FeatureRecorder(layers, create("class_map", demo.model, target_class="circle")) as recorder:
        inference_model(demo.model, image)
        cam = recorder.pop()["decode_head.bottleneck"][0].maps[0].numpy()
    # the demo images are 192x256 and need neither resize nor padding: the 24x32 map
    # covers the whole image
    up = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    iou = ((up > 0) & circle).sum() / ((up > 0) | circle).sum()
    # Measured: 0.954 (scene_000), 0.901 (scene_001); the model's own argmax prediction
    # scores 0.980 and 0.937. 0.8 leaves room for float noise and platform BLAS, yet fails
    # for another class's row (background, square, triangle: <= 0.07) or a sign error (<= 0.001).
    assert iou >= 0.8, f"IoU {iou:.3f}"
