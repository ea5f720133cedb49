import torch

from featvis.reductions import REDUCTIONS, reduce


def _feat() -> torch.Tensor:
    feat = torch.zeros(3, 4, 4)
    feat[0, 0, 0] = 100.0  # the largest pixel, small sum
    feat[1] = 10.0  # the largest spatial sum: 160
    feat[2] = 5.0  # sum 80
    return feat


def test_select_max_picks_largest_spatial_sum_not_largest_pixel():
    out = reduce("select_max", _feat())
    assert out.channels == [1]
    assert torch.equal(out.maps, torch.full((1, 4, 4), 10.0))


def test_squeeze_mean_is_the_channel_mean():
    feat = _feat()
    out = reduce("squeeze_mean", feat)
    assert out.maps.shape == (1, 4, 4)
    assert torch.allclose(out.maps[0], feat.mean(0))
    assert out.channels is None


def test_topk_orders_channels_by_spatial_sum_and_caps_at_channel_count():
    out = reduce("topk", _feat(), topk=2)
    assert out.channels == [1, 0]  # sums 160, 100 (channel 2 sums to 80)
    assert out.maps.shape == (2, 4, 4)
    assert reduce("topk", _feat(), topk=10).maps.shape == (3, 4, 4)


def test_result_is_a_float32_copy_not_a_view_of_the_feature_map():
    feat = torch.randn(64, 8, 8, dtype=torch.float16)
    out = reduce("select_max", feat)
    assert out.maps.dtype == torch.float32
    # a view would keep all 64 channels alive
    assert out.maps.untyped_storage().nbytes() == 8 * 8 * 4


def test_registry_holds_mmengine_modes():
    assert {"select_max", "squeeze_mean", "topk"} <= set(REDUCTIONS)
