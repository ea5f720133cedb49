import pytest
from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.layer_selection import select_layers


def _model() -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()),  # 0, 0.0, 0.1
                         nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)))  # 1, 1.0, 1.1


def test_exact_names_keep_the_users_order():
    names = [n for n, _ in select_layers(_model(), ["1.1", "0.0", "1"])]
    assert names == ["1.1", "0.0", "1"]


def test_glob_expands_in_module_order_and_duplicates_keep_first_place():
    names = [n for n, _ in select_layers(_model(), ["1.1", "*.?"])]
    assert names == ["1.1", "0.0", "0.1", "1.0"]


def test_modules_are_the_models_own():
    model = _model()
    (_, module), = select_layers(model, ["1.0"])
    assert module is model[1][0]


def test_unknown_name_lists_closest_matches():
    with pytest.raises(LayerNotFoundError) as err:
        select_layers(_model(), ["1.2"])
    msg = str(err.value)
    assert "'1.2'" in msg and "1.1" in msg and "\n" not in msg


def test_pattern_matching_nothing_fails():
    with pytest.raises(LayerNotFoundError, match="pattern 'decode_head.\\*'"):
        select_layers(_model(), ["decode_head.*"])
