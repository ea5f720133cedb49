import numpy as np
import torch

from featvis import rendering


def test_heatmap_is_rgb_high_values_red_low_values_blue():
    values = np.array([[0.0, 1.0]], np.float32)
    heat = rendering.heatmap(values, None, 1.0)
    low, high = heat[0, 0], heat[0, 1]
    assert low[2] > 100 and low[0] == 0  # JET minimum: blue, in RGB order
    assert high[0] > 100 and high[2] == 0  # JET maximum: red, in RGB order


def test_overlay_blends_with_alpha_over_the_rgb_image():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 1] = 200  # green
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    out = rendering.overlay_maps(maps, image, {}, alpha=0.25)
    heat = rendering.heatmap(rendering.align(maps[0], {}, (4, 4)), None, 1.0)
    expected = np.round(0.75 * image + 0.25 * heat)
    assert out.shape == (4, 4, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_constant_map_draws_as_zero_not_nan():
    assert rendering.normalize(np.full((3, 3), 7.0)).max() == 0
    values = np.array([[np.nan, 1.0], [0.0, 2.0]])
    assert rendering.normalize(values).tolist() == [[0, 127], [0, 255]]


def test_align_crops_padding_and_resizes_to_original():
    # The model saw the image resized to 8x12 and padded to 16x16; the map is 4x4.
    meta = {"img_shape": (8, 12), "batch_input_shape": (16, 16), "ori_shape": (20, 30)}
    fmap = torch.zeros(4, 4)
    fmap[:2, :3] = 1.0  # the image part
    fmap[2:, :] = -5.0  # padding rows
    fmap[:, 3:] = -5.0  # padding columns
    out = rendering.align(fmap, meta, (20, 30))
    assert out.shape == (20, 30)
    assert np.allclose(out, 1.0)  # no padding value leaks into the picture


def test_topk_grid_layout():
    image = np.zeros((10, 20, 3), np.uint8)
    maps = torch.rand(4, 5, 5)
    out = rendering.overlay_maps(maps, image, {}, 0.5, arrangement=(2, 2), labels=["a", "b", "c", "d"])
    assert out.shape == (2 * 10 + 4, 2 * 20 + 4, 3)
    assert (out[10:14] == 255).all()  # the white gap between rows


def test_labels_use_the_palette_and_leave_ignored_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 1]], np.uint8)
    palette = [[0, 0, 0], [250, 0, 0]]
    out = rendering.overlay_labels(labels, image, palette, alpha=0.5)
    assert out[0, 1].tolist() == [175, 50, 50]
    assert out[1, 0].tolist() == [100, 100, 100]  # ignore index: the image


def test_rounding_noise_is_a_constant_map_drawn_as_the_plain_image():
    image = np.full((4, 4, 3), 90, np.uint8)
    noisy = torch.full((1, 4, 4), 1.808955192565918)
    noisy[0, 0, 0] += 2.4e-7  # what a global-pooling branch gives: one ulp of difference
    assert rendering.is_constant(noisy[0].numpy())
    assert np.array_equal(rendering.overlay_maps(noisy, image, {}, 0.5), image)
    assert not rendering.is_constant(np.array([[1.0, 1.001]]))


def test_nan_drawn_as_minimum_and_all_nan_is_constant():
    assert rendering.normalize(np.array([[np.nan, 0.0], [1.0, 2.0]])).tolist() == [[0, 0], [127, 255]]
    assert rendering.is_constant(np.full((2, 2), np.nan))
