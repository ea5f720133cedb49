"""The config groups compose, validate and fail the way the README says."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from featvis.config.schema import validate
from featvis.errors import ConfigError
from tests.conftest import CONF, compose_cfg

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def test_default_job():
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.model.name == "demo"
    assert list(cfg.layers.names) == list(cfg.model.layer_presets.decoder)
    assert cfg.reduction.name == "select_max"
    assert set(cfg.backends) == {"local", "wandb"}
    assert cfg.backends.wandb.kwargs.mode == "auto"


def test_shipped_models():
    assert {"demo", "ann", "pspnet", "deeplabv3", "segformer"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("layers", ["decoder", "backbone"])
def test_every_model_has_both_layer_presets(model, layers):
    cfg = compose_cfg(f"model={model}", f"layers={layers}")
    validate(cfg)
    assert cfg.layers.names and all(isinstance(n, str) for n in cfg.layers.names)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_a_dense_preset_and_an_auxiliary_one_if_it_has_that_head(model):
    cfg = compose_cfg(f"model={model}", "layers=dense")
    validate(cfg)
    assert list(cfg.layers.names) == ["*@Conv2d"]
    if model != "segformer":  # SegFormer has no auxiliary head
        validate(compose_cfg(f"model={model}", "layers=auxiliary"))


def test_ann_checkpoint_is_the_metafile_url():
    cfg = compose_cfg("model=ann")
    assert cfg.model.config == "mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py"
    assert cfg.model.checkpoint.startswith("https://download.openmmlab.com/mmsegmentation/")


@pytest.mark.parametrize("backends, expected", [
    ("backends=[local]", {"local"}),
    ("backends=[local,wandb,tensorboard]", {"local", "wandb", "tensorboard"}),
])
def test_backends_list_form(backends, expected):
    cfg = compose_cfg(backends)
    validate(cfg)
    assert set(cfg.backends) == expected


def test_layers_overridable_on_the_command_line():
    cfg = compose_cfg("layers.names=[backbone.layer4,decode_head.*]")
    assert list(cfg.layers.names) == ["backbone.layer4", "decode_head.*"]


def test_preset_pins_several_groups():
    cfg = compose_cfg("+preset=ann_cityscapes_decoder")
    validate(cfg)
    assert cfg.model.name == "ann"
    assert "decode_head.context" in cfg.layers.names


def test_team_preset_folder_on_the_search_path(tmp_path):
    team = tmp_path / "team_conf"
    (team / "preset").mkdir(parents=True)
    (team / "preset" / "ours.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: pspnet\n  - override /reduction: topk\n"
        "reduction:\n  topk: 6\n  arrangement: [2, 3]\n")
    cfg = compose_cfg(f"hydra.searchpath=[file://{team}]", "+preset=ours")
    validate(cfg)
    assert cfg.model.name == "pspnet" and cfg.reduction.topk == 6


@pytest.mark.parametrize("override", ["modle=ann", "reduction.top_k=3"])
def test_unknown_key_rejected_while_composing(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(override)


@pytest.mark.parametrize("override, key", [("+_target_=os.system", "_target_"),
                                           ("+reduction.top_k=3", "reduction.top_k"),
                                           ("+backends.local.kwrags.x=1", "backends.local.kwrags")])
def test_keys_added_with_plus_rejected_before_any_model(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        validate(compose_cfg(override))


@pytest.mark.parametrize("override", ["alpha=high", "reduction.topk=many", "wandb.init_timeout=soon"])
def test_wrong_type_rejected_while_composing(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(override)


@pytest.mark.parametrize("override, choices", [
    ("wandb.mode=sometimes", "auto, online, offline, disabled"),
    ("mode=draw", "run, list"),
    ("sample=last", "first, random"),
    ("normalize.mode=global", "per_map, shared, fixed, percentile"),
    ("normalize.colormap=viridis", "auto, jet, diverging"),
])
def test_unknown_choice_rejected_while_composing_with_the_choices(override, choices):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(override)
    assert f"expected one of [{choices}]" in str(err.value.__cause__)


@pytest.mark.parametrize("overrides, message", [
    (["alpha=1.5"], "alpha=1.5 must be between 0 and 1"),
    (["reduction.name=max_pool"], "reduction.name='max_pool' is unknown"),
    (["reduction=topk", "reduction.topk=5"], "fewer cells than reduction.topk=5"),
    (["device=gpu"], "device='gpu' is not a device"),
    (["layers.names=[]"], "layers.names is empty"),
    (["backends.local.type=NoSuchBackend"], "not in MMEngine's VISBACKENDS"),
])
def test_bad_values_rejected_before_any_model(overrides, message):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        validate(cfg)


def test_missing_layer_preset_explained():
    cfg = compose_cfg("layers=decoder")
    OmegaConf.set_struct(cfg, False)
    del cfg.model.layer_presets["decoder"]
    with pytest.raises(ConfigError, match="has no 'decoder' layer preset"):
        validate(cfg)


def test_no_target_in_shipped_presets_only_featvis_own_hydra_callbacks():
    for path in CONF.rglob("*.yaml"):
        if path != CONF / "config.yaml":
            assert "_target_" not in path.read_text(), path
    main = OmegaConf.load(CONF / "config.yaml")
    assert "_target_" not in OmegaConf.to_yaml({k: v for k, v in main.items() if k != "hydra"})
    assert [c._target_ for c in main.hydra.callbacks.values()] == ["featvis.sweep.callbacks.OutputLock",
                                                               "featvis.sweep.callbacks.SweepPlan",
                                                               "featvis.sweep.callbacks.SweepSummary"]
