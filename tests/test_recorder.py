
import pytest
import torch
from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.record.layers import select_layers
from featvis.record.recorder import FeatureRecorder
from featvis.reduce.registry import create


class Pair(nn.Module):
    """Returns a tuple, like mmseg backbones and several heads."""

    def forward(self, x):
        return x * 2, x * 3


class Named(nn.Module):
    def forward(self, x):
        return {"low": x + 1, "note": "not a tensor"}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 1)
        self.pair = Pair()
        self.named = Named()
        self.shared = nn.Identity()  # called twice per forward
        self.tokens = nn.Flatten(2)  # (B, C, H*W): not a map

    def forward(self, x):
        y = self.conv(x)
        a, b = self.pair(y)
        self.named(a)
        self.shared(a)
        self.shared(b)
        self.tokens(b)
        return b


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _select(model, *names):
    return select_layers(model, list(names))


def _mean():
    return create("squeeze_mean")


def test_tuple_and_dict_elements_recorded_under_sub_names_in_user_order():
    model = Net()
    x = torch.randn(1, 2, 5, 6)
    with FeatureRecorder(_select(model, "named", "pair", "conv"), _mean()) as rec:
        model(x)
    maps = rec.pop()
    assert list(maps) == ["named:low", "pair[0]", "pair[1]", "conv"]
    y = model.conv(x)
    assert torch.allclose(maps["pair[1]"][0].maps[0], (y * 3)[0].mean(0), atol=1e-5)
    assert torch.allclose(maps["named:low"][0].maps[0], (y * 2 + 1)[0].mean(0), atol=1e-5)
    assert "named:note" in rec.skipped["named"]


def test_batch_dimension_kept_not_indexed_with_zero():
    model = Net()
    x = torch.randn(2, 2, 4, 4)
    with FeatureRecorder(_select(model, "pair"), _mean()) as rec:
        model(x)
    maps = rec.pop()
    assert len(maps["pair[0]"]) == 2  # one per batch item
    assert not torch.allclose(maps["pair[0]"][0].maps, maps["pair[0]"][1].maps)


def test_repeated_calls_each_recorded():
    model = Net()
    x = torch.randn(1, 2, 4, 4)
    with FeatureRecorder(_select(model, "shared"), _mean()) as rec:
        model(x)
    maps = rec.pop()
    assert list(maps) == ["shared", "shared#2"]
    assert torch.allclose(maps["shared#2"][0].maps / 3, maps["shared"][0].maps / 2, atol=1e-5)


def test_reduced_inside_the_hook_only_k_maps_kept():
    model = Net()
    with FeatureRecorder(_select(model, "conv"), create("select_max")) as rec:
        model(torch.randn(1, 2, 7, 9))
    (reduced,) = rec.pop()["conv"]
    assert reduced.maps.shape == (1, 7, 9)  # not (8, 7, 9)


def test_non_map_output_is_reported_not_drawn():
    model = Net()
    with FeatureRecorder(_select(model, "tokens"), _mean()) as rec:
        model(torch.randn(1, 2, 4, 4))
    assert rec.pop() == {}
    assert "(1, 8, 16)" in rec.skipped["tokens"]["tokens"]


def test_pop_clears_between_images():
    model = Net()
    with FeatureRecorder(_select(model, "shared"), _mean()) as rec:
        model(torch.randn(1, 2, 4, 4))
        rec.pop()
        model(torch.randn(1, 2, 4, 4))
        assert list(rec.pop()) == ["shared", "shared#2"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_hooks_removed_after_exception(exc):
    model = Net()
    with pytest.raises(exc):
        with FeatureRecorder(_select(model, "conv", "pair", "shared"), _mean()):
            assert _hooks(model) == 3
            raise exc()
    assert _hooks(model) == 0


def test_hooks_removed_when_the_forward_fails():
    model = Net()
    with pytest.raises(RuntimeError):
        with FeatureRecorder(_select(model, "conv"), _mean()):
            model(torch.randn(1, 5, 4, 4))  # wrong channel count
    assert _hooks(model) == 0


def test_hooks_removed_after_normal_exit():
    model = Net()
    with FeatureRecorder(_select(model, "conv", "pair"), _mean()):
        model(torch.randn(1, 2, 4, 4))
    assert _hooks(model) == 0


def test_picks_record_only_that_element():
    model = Net()
    x = torch.randn(1, 2, 4, 4)
    with FeatureRecorder(_select(model, "pair[1]", "named:low"), _mean()) as rec:
        model(x)
    maps = rec.pop()
    assert list(maps) == ["pair[1]", "named:low"]
    assert torch.allclose(maps["pair[1]"][0].maps[0], (model.conv(x) * 3)[0].mean(0), atol=1e-5)


@pytest.mark.parametrize("spec, message", [("pair[2]", "is a tuple of 2"), ("named:high", "no key 'high'"),
                                           ("conv[0]", "is a Tensor")])
def test_bad_pick_is_a_clear_error_and_hooks_are_removed(spec, message):
    model = Net()
    with pytest.raises(LayerNotFoundError, match=message):
        with FeatureRecorder(_select(model, spec), _mean()):
            model(torch.randn(1, 2, 4, 4))
    assert _hooks(model) == 0


class Stem(nn.Module):
    def forward(self, x):
        return x


class Block(nn.Module):
    """Like mmseg's transformer blocks: tokens in, tokens out, hw_shape passed along."""

    def forward(self, tokens, hw_shape):
        return tokens * 1.0


class Norm(nn.Module):
    def forward(self, tokens):
        return tokens + 0.0


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.norm = Stem(), Block(), Norm()

    def forward(self, image, tokens, hw_shape):
        self.stem(image)
        return self.norm(self.block(tokens, hw_shape=hw_shape))


def _token_input(h, w, c=3):
    fmap = torch.arange(c * h * w, dtype=torch.float32).reshape(1, c, h, w)
    return fmap, fmap.flatten(2).transpose(1, 2)  # (1, C, H, W) and its (1, N, C) tokens


def test_tokens_reshaped_with_the_hw_shape_passed_along():
    model = Tokens()
    fmap, tokens = _token_input(3, 5)
    with FeatureRecorder(_select(model, "block"), _mean()) as rec:
        model(torch.zeros(1, 3, 100, 100), tokens, (3, 5))  # image aspect would say square
    (reduced,) = rec.pop()["block"]
    assert torch.equal(reduced.maps[0], fmap[0].mean(0))


def test_tokens_reshaped_from_the_images_aspect_ratio_without_hw_shape():
    model = Tokens()
    fmap, tokens = _token_input(4, 8)
    with FeatureRecorder(_select(model, "norm"), _mean(), watch=model.stem) as rec:
        model(torch.zeros(1, 3, 64, 128), tokens, None)
    (reduced,) = rec.pop()["norm"]
    assert torch.equal(reduced.maps[0], fmap[0].mean(0))


def test_tokens_whose_grid_cannot_be_inferred_are_reported():
    model = Tokens()
    tokens = torch.randn(1, 7, 3)  # 7 tokens: no 1:2 grid
    with FeatureRecorder(_select(model, "norm"), _mean(), watch=model.stem) as rec:
        model(torch.zeros(1, 3, 64, 128), tokens, None)
    assert rec.pop() == {}
    assert "cannot tell the (H, W) grid of its 7 tokens" in rec.skipped["norm"]["norm"]


def test_problems_of_layers_recorded_for_other_jobs_are_not_logged(caplog):
    """share_forward records the layers of a sweep's other jobs: their problems are reported by those jobs."""
    model = Net()
    with FeatureRecorder(_select(model, "tokens"), _mean(), quiet=["tokens"]) as rec:
        model(torch.randn(1, 2, 4, 4))
    assert rec.skipped["tokens"] and not [r for r in caplog.records if "is not drawn" in r.getMessage()]
    with FeatureRecorder(_select(model, "tokens"), _mean()):
        model(torch.randn(1, 2, 4, 4))
    assert [r for r in caplog.records if "tokens is not drawn" in r.getMessage()]
