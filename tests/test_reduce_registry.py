"""The reduction registry: every module of featvis.reduce is found, every conf/reduction YAML
matches a reduction and its config dataclass, and callers ask a reduction's traits."""

import sys
import textwrap

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import featvis.reduce
from featvis.config.schema import register_configs, validate
from featvis.errors import ConfigError, ReductionError
from featvis.reduce import options, registry
from featvis.reduce.base import ReductionConfig
from featvis.reduce.channels import Topk, TopkConfig
from featvis.reduce.class_map import ClassMap, ClassMapConfig
from featvis.sweep.plan import share_key
from tests.helpers import CONF, compose_cfg


def _target(cls) -> list:
    return ["reduction.target_class=1"] if cls.needs_class else []


def test_the_options_listed_for_the_command_line_are_each_reductions_own():
    """featvis.reduce.options.OPTIONS (composed without importing torch) names each reduction's config_class."""
    assert options.OPTIONS == {name: cls.config_class for name, cls in registry.reductions().items()}


def test_every_yaml_is_a_registered_reduction_and_every_reduction_has_a_yaml():
    assert {p.stem for p in (CONF / "reduction").glob("*.yaml")} == set(registry.names())


@pytest.mark.parametrize("name", registry.names())
def test_each_yaml_composes_onto_its_reductions_config_dataclass(name):
    cls = registry.get(name)
    cfg = compose_cfg(f"reduction={name}", *_target(cls))
    assert cfg.reduction.name == name and cls.name == name
    assert OmegaConf.get_type(cfg.reduction) is cls.config_class
    assert type(validate(cfg).reduction) is cls.config_class  # the typed Config holds the subclass


def test_options_belong_to_their_reduction_and_are_checked_while_composing():
    assert compose_cfg("reduction=topk", "reduction.topk=3").reduction.topk == 3
    with pytest.raises(ConfigCompositionException, match="reduction.topk"):
        compose_cfg("reduction=select_max", "reduction.topk=3")  # select_max has no topk
    with pytest.raises(ConfigCompositionException, match="reduction.top_k"):
        compose_cfg("reduction=topk", "reduction.top_k=3")  # misspelt
    with pytest.raises(ConfigCompositionException, match="reduction.shared_basis"):
        compose_cfg("reduction=class_map", "reduction.shared_basis=true")  # pca_rgb's option
    with pytest.raises(ConfigError, match="unknown config key 'reduction.top_k'"):
        validate(compose_cfg("reduction=topk", "+reduction.top_k=3"))


def test_to_object_of_a_merged_reduction_node_is_the_reductions_own_dataclass():
    typed = OmegaConf.to_object(compose_cfg("reduction=topk", "reduction.topk=3"))
    assert isinstance(typed.reduction, TopkConfig) and typed.reduction.topk == 3
    assert type(OmegaConf.to_object(compose_cfg()).reduction) is ReductionConfig  # select_max: the name only


def test_a_config_of_another_reduction_is_refused():
    with pytest.raises(ConfigError, match="reduction.name=select_max does not match the options given "
                                          r"\(TopkConfig\): choose the reduction with reduction=select_max"):
        validate(compose_cfg("reduction=topk", "reduction.name=select_max"))


def test_option_checks_are_the_reductions_own():
    with pytest.raises(ConfigError, match="reduction.topk=0 must be at least 1"):
        Topk.check_options(TopkConfig("topk", topk=0))
    with pytest.raises(ConfigError, match=r"reduction.arrangement=\[3\] must be \[rows, cols\]"):
        Topk.check_options(TopkConfig("topk", arrangement=[3]))
    with pytest.raises(ConfigError, match="reduction=class_map needs a class"):
        ClassMap.check_options(ClassMapConfig("class_map"))
    with pytest.raises(ReductionError, match="needs the model"):
        registry.build(ClassMapConfig("class_map", target_class="1"))  # the class needs the model's classifier


def test_the_sweep_plan_asks_the_traits_not_the_names(monkeypatch):
    for name, cls in registry.reductions().items():
        key = share_key(compose_cfg(f"reduction={name}", *_target(cls)))
        assert (key is None) == cls.uses_gradients, name  # gradcam runs the model itself
    assert share_key(compose_cfg("reduction=pca_rgb", "reduction.shared_basis=true")) is None  # a first pass
    monkeypatch.setattr(Topk, "uses_gradients", True)
    assert share_key(compose_cfg("reduction=topk")) is None
    monkeypatch.setattr(Topk, "uses_gradients", False)
    monkeypatch.setattr(Topk, "render_only", frozenset({"arrangement", "topk"}))
    assert share_key(compose_cfg("reduction=topk")) == share_key(compose_cfg("reduction=topk", "reduction.topk=2"))


def test_a_name_claimed_twice_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "twice"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("a", "b"):
        (package / f"{module}.py").write_text(textwrap.dedent("""
            from featvis.reduce.base import Reduced, Reduction

            class Same(Reduction):
                name = "same"

                def apply(self, feat, layer):
                    return Reduced(feat[:1])
            """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="reduction 'same' is defined twice: twice.a and twice.b"):
        registry.discover("twice")


# ---------------------------------------------------- the README's "Add a reduction" recipe

NEGATE = '''
"""negate: the channel mean, negated and scaled (a reduction written by the README's recipe)."""

from dataclasses import dataclass

import torch

from featvis.errors import ConfigError
from featvis.reduce.base import Reduced, Reduction, ReductionConfig


@dataclass
class NegateConfig(ReductionConfig):
    scale: float = 1.0  # the factor


class Negate(Reduction):
    name = "negate"
    config_class = NegateConfig

    @classmethod
    def check_options(cls, config: NegateConfig) -> None:
        if config.scale <= 0:
            raise ConfigError(f"reduction.scale={config.scale} must be positive")

    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        return Reduced(-self.config.scale * feat.mean(dim=0, keepdim=True))
'''

NEGATE_YAML = """
defaults:
  - base_negate
  - _self_

name: negate
scale: 2.0
"""


@pytest.fixture
def negate(tmp_path, monkeypatch):
    """A new module file in the featvis.reduce package (its path extended) and its YAML, nothing else."""
    code, conf = tmp_path / "reduce", tmp_path / "conf" / "reduction"
    code.mkdir()
    conf.mkdir(parents=True)
    (code / "negate.py").write_text(NEGATE)
    (conf / "negate.yaml").write_text(NEGATE_YAML)
    monkeypatch.setattr(featvis.reduce, "__path__", [*featvis.reduce.__path__, str(code)])
    registry.reductions.cache_clear()
    # its options named in featvis.reduce.options.OPTIONS, as the README says (here: the module's own class)
    monkeypatch.setitem(options.OPTIONS, "negate", registry.get("negate").config_class)
    register_configs()  # as at start-up: every reduction's schema in the ConfigStore
    yield f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    monkeypatch.undo()
    sys.modules.pop("featvis.reduce.negate", None)
    registry.reductions.cache_clear()


def test_a_new_reduction_is_one_module_and_one_yaml(negate):
    assert "negate" in registry.names()
    cfg = validate(compose_cfg(negate, "reduction=negate", "reduction.scale=3", "layers.names=[backbone]"))
    reduction = registry.build(cfg.reduction)
    out = reduction(torch.ones(4, 2, 3))
    assert torch.equal(out.maps, torch.full((1, 2, 3), -3.0))
    assert share_key(cfg) is not None  # shares forward passes: it uses no gradients and no first pass
    with pytest.raises(ConfigError, match="reduction.scale=-1.0 must be positive"):
        validate(compose_cfg(negate, "reduction=negate", "reduction.scale=-1"))
    with pytest.raises(ConfigCompositionException, match="reduction.topk"):
        compose_cfg(negate, "reduction=negate", "reduction.topk=3")
