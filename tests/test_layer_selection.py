import pytest
from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.record.layers import select_layers


def _model() -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()),  # 0, 0.0, 0.1
                         nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)))  # 1, 1.0, 1.1


def test_exact_names_keep_the_users_order():
    names = [s.name for s in select_layers(_model(), ["1.1", "0.0", "1"])]
    assert names == ["1.1", "0.0", "1"]


def test_glob_expands_in_module_order_and_duplicates_keep_first_place():
    names = [s.name for s in select_layers(_model(), ["1.1", "*.?"])]
    assert names == ["1.1", "0.0", "0.1", "1.0"]


def test_modules_are_the_models_own():
    model = _model()
    (selected,) = select_layers(model, ["1.0"])
    assert selected.module is model[1][0]


def test_unknown_name_lists_closest_matches():
    with pytest.raises(LayerNotFoundError) as err:
        select_layers(_model(), ["1.2"])
    msg = str(err.value)
    assert "'1.2'" in msg and "1.1" in msg and "\n" not in msg


def test_pattern_matching_nothing_fails():
    with pytest.raises(LayerNotFoundError, match="pattern 'decode_head.\\*'"):
        select_layers(_model(), ["decode_head.*"])


def test_type_filter_with_glob_and_alone():
    model = _model()
    assert [s.name for s in select_layers(model, ["1.*@Conv2d"])] == ["1.0", "1.1"]
    assert [s.name for s in select_layers(model, ["@Conv2d"])] == ["0.0", "1.0", "1.1"]
    assert [s.name for s in select_layers(model, ["@Sequential"])] == ["0", "1"]


def test_type_filter_matches_base_classes():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(MyConv(1, 1, 1), nn.ReLU())
    assert [s.name for s in select_layers(model, ["@Conv2d"])] == ["0"]


def test_type_that_is_not_there_lists_the_types_that_are():
    with pytest.raises(LayerNotFoundError, match="no module of type ConvModule there; types there include"):
        select_layers(_model(), ["1.*@ConvModule"])


def test_picks_select_elements_and_name_the_layer():
    model = _model()
    selected = select_layers(model, ["1[1]", "0:low", "1[1]"])
    assert [s.name for s in selected] == ["1[1]", "0:low"]
    assert selected[0].module is model[1] and selected[0].pick == (1,)
    assert selected[1].pick == ("low",)


@pytest.mark.parametrize("spec", ["1[x]", "@", "1@Conv-2d", "a b"])
def test_unreadable_spec(spec):
    with pytest.raises(LayerNotFoundError):
        select_layers(_model(), [spec])
