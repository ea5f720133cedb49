"""The config groups compose, validate and fail the way the README says."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from featvis.config.schema import validate
from featvis.errors import ConfigError
from tests.helpers import CONF, compose_cfg

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def test_default_job():
    cfg = compose_cfg()
    config = validate(cfg)
    assert config.model.name == "demo_pspnet"  # the config file's stem
    assert config.model.checkpoint == "featvis::checkpoints/demo_pspnet.pth"  # auto: the shipped one
    assert (config.image, config.gt_mask) == ("featvis::demo/images", "featvis::demo/masks")
    assert (config.layers.preset, config.layers.names) == ("decoder", None)
    assert config.reduction.name == "select_max"
    assert set(config.backends) == {"local", "wandb"}
    assert config.backends["wandb"].kwargs["mode"] == "auto"


def test_shipped_models():
    assert {"demo", "ann", "pspnet", "deeplabv3", "segformer"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("layers", ["decoder", "backbone", "neck", "auxiliary", "dense"])
def test_every_layers_option_is_a_preset_resolved_on_the_model(model, layers):
    config = validate(compose_cfg(f"model={model}", f"layers={layers}"))
    assert (config.layers.preset, config.layers.names) == (layers, None)


def test_ann_checkpoint_is_the_metafile_url():
    config = validate(compose_cfg("model=ann"))
    assert config.model.config == "mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py"
    assert config.model.checkpoint == (
        "https://download.openmmlab.com/mmsegmentation/v0.5/ann/ann_r50-d8_512x1024_40k_cityscapes/"
        "ann_r50-d8_512x1024_40k_cityscapes_20200605_095211-049fc292.pth")  # mmseg's ann/metafile.yaml


@pytest.mark.parametrize("backends, expected", [
    ("backends=[local]", {"local"}),
    ("backends=[local,wandb,tensorboard]", {"local", "wandb", "tensorboard"}),
])
def test_backends_list_form(backends, expected):
    cfg = compose_cfg(backends)
    validate(cfg)
    assert set(cfg.backends) == expected


def test_layers_overridable_on_the_command_line_and_then_no_preset_is_claimed():
    config = validate(compose_cfg("layers.names=[backbone.layer4,decode_head.*]"))
    assert config.layers.names == ["backbone.layer4", "decode_head.*"]
    assert config.layers.preset is None  # the names are what is drawn, not the default preset


def test_preset_pins_several_groups():
    config = validate(compose_cfg("+preset=ann_cityscapes_decoder"))
    assert config.model.name == "ann_r50-d8_4xb2-40k_cityscapes-512x1024"
    assert config.layers.preset == "decoder"


def test_team_preset_folder_on_the_search_path(tmp_path):
    team = tmp_path / "team_conf"
    (team / "preset").mkdir(parents=True)
    (team / "preset" / "ours.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: pspnet\n  - override /reduction: topk\n"
        "reduction:\n  topk: 6\n  arrangement: [2, 3]\n")
    cfg = compose_cfg(f"hydra.searchpath=[file://{team}]", "+preset=ours")
    validate(cfg)
    assert cfg.model.name.startswith("pspnet_r50") and cfg.reduction.topk == 6


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


def test_no_target_in_shipped_presets_only_featvis_own_hydra_callbacks():
    for path in CONF.rglob("*.yaml"):
        if path != CONF / "config.yaml":
            assert "_target_" not in path.read_text(), path
    main = OmegaConf.load(CONF / "config.yaml")
    assert "_target_" not in OmegaConf.to_yaml({k: v for k, v in main.items() if k != "hydra"})
    assert [c._target_ for c in main.hydra.callbacks.values()] == ["featvis.sweep.callbacks.OutputLock",
                                                               "featvis.sweep.callbacks.SweepPlan",
                                                               "featvis.sweep.callbacks.SweepSummary"]
