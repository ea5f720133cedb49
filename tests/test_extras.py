"""A missing OpenMMLab extra (mmdet, mmpretrain, torchvision) is named in one line, with the model
families that need it and how to install it (featvis.model.extras)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from featvis.data.paths import ASSETS, resolve_model_config
from featvis.errors import ConfigError
from featvis.model import extras
from featvis.model.load import read_config

MASK2FORMER = "mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py"
CONVNEXT = "mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py"


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make `import <package>` fail with ModuleNotFoundError, installed or not."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # Python: "import of <package> halted"


def _error(spec: str, path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        read_config(spec, path)
    message = str(err.value)
    assert "\n" not in message and "sys.path" not in message
    return message


def test_known_modules_map_to_their_extra():
    assert extras.extra_for("mmdet.models") is extras.MMDET
    assert extras.extra_for("mmpretrain") is extras.MMPRETRAIN
    assert extras.extra_for("torchvision.ops") is extras.MMPRETRAIN
    assert extras.advice("featvis_no_such_pkg") is None and extras.advice("mmdetx") is None


def test_torchvision_release_follows_torch():
    assert extras.torchvision_for("2.13.0+cpu") == "0.28.0"
    assert extras.torchvision_for("2.0.1") == "0.15.0"
    assert extras.torchvision_for("3.0.0") is None


def test_torchvision_advice_depends_on_the_torch_build(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "--index-url https://download.pytorch.org/whl/cpu" in extras.torchvision_command()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "index-url" not in extras.torchvision_command()
    assert extras.torchvision_command().startswith("pip install torchvision==")


def test_a_missing_mmdet_names_the_families_and_the_extra(monkeypatch):
    _hide(monkeypatch, "mmdet")
    message = _error(MASK2FORMER, resolve_model_config(MASK2FORMER))
    assert message.startswith(f"custom_imports of model.config {MASK2FORMER!r}: cannot import 'mmdet.models' "
                              "(ModuleNotFoundError: ")
    assert message.endswith(': Mask2Former and MaskFormer models need the mmdet extra: pip install -e ".[mmdet]"')


def test_a_missing_mmpretrain_names_the_extra_and_its_torchvision(monkeypatch):
    _hide(monkeypatch, "mmpretrain")
    message = _error(CONVNEXT, resolve_model_config(CONVNEXT))
    assert "cannot import 'mmpretrain.models'" in message
    assert 'ConvNeXt and PoolFormer models need the mmpretrain extra: pip install -e ".[mmpretrain]"' in message
    want = extras.torchvision_for(torch.__version__)
    assert f"torchvision built for torch {torch.__version__}: pip install torchvision=={want}" in message


@pytest.mark.skipif(importlib.util.find_spec("mmpretrain") is not None, reason="mmpretrain is installed here")
def test_a_config_of_your_own_importing_mmpretrain(tmp_path):
    """As it happens here: a config with mmpretrain in its custom_imports, mmpretrain not installed."""
    path = tmp_path / "poolformer_like.py"
    base = ASSETS / "configs" / "demo_pspnet.py"
    path.write_text(f"_base_ = [{str(base)!r}]\n"
                    "custom_imports = dict(imports=['mmpretrain.models'], allow_failed_imports=False)\n")
    message = _error(str(path), path)
    assert message.startswith(f"custom_imports of model.config {str(path)!r}: cannot import 'mmpretrain.models' "
                              "(ModuleNotFoundError: No module named 'mmpretrain'): ConvNeXt and PoolFormer "
                              'models need the mmpretrain extra: pip install -e ".[mmpretrain]", and torchvision ')


def test_configs_that_build_from_an_extra_are_found():
    maskformer = "mmseg::maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py"  # no custom_imports
    model = read_config(maskformer, resolve_model_config(maskformer)).model
    assert extras.needed_by(model) == [extras.MMDET]
    assert extras.needed_by({"type": "EncoderDecoder", "backbone": {"type": "mmpretrain.ConvNeXt"}}) == \
        [extras.MMPRETRAIN]
    assert extras.needed_by({"type": "EncoderDecoder", "decode_head": [{"type": "FCNHead"}]}) == []


def test_a_config_whose_extra_is_missing_is_told_before_the_build(monkeypatch):
    model = {"type": "EncoderDecoder", "decode_head": {"type": "MaskFormerHead", "pixel_decoder": {}}}
    _hide(monkeypatch, "mmdet")
    line = extras.check_config("maskformer.py", model)
    assert line.startswith("model.config 'maskformer.py' builds from mmdet: cannot import mmdet.models ")
    assert line.endswith('Mask2Former and MaskFormer models need the mmdet extra: pip install -e ".[mmdet]"')
    assert extras.missing(extras.MMDET) is not None and "\n" not in line


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="the mmdet extra is not installed here")
def test_an_installed_mmdet_is_not_missing():
    assert extras.missing(extras.MMDET) is None
    assert extras.check_config("m.py", {"decode_head": {"type": "Mask2FormerHead"}}) is None
