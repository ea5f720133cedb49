"""The private APIs featvis uses, pinned: if a library moves or changes one, this fails first.

- MMEngine's `_load_checkpoint_to_model` (featvis.model.load): featvis reads the checkpoint
  itself (weights_only) and hands the dict over, for MMEngine's key revision and reporting.
- mmseg's `_preprare_data` (sic; featvis.record.gradcam, featvis.engine.forward_errors): the
  exact preparation `inference_model` does, for Grad-CAM's forward pass with gradients and for
  the size a failed forward pass was fed.
- Hydra's `BasicSweeper.split_arguments` and the basic launcher's path (featvis.sweep.plan):
  how the basic sweeper expands a sweep into jobs, to plan shared forward passes.
- Hydra's `ConfigLoaderImpl.load_configuration` and `_load_single_config` (featvis.config.data_only):
  every composed config, and each file in it, checked to name no code before Hydra uses it.
- Hydra's `ConfigRepository.load_config` and `_find_object_source`, its config sources' `path`,
  `scheme()` and `_normalize_file_name`, and the `root`/`repo` locals of
  `defaults_list._create_defaults_tree_impl` (featvis.config.bounded): every config file checked
  before it is parsed, and a defaults loop named by its files.
- Hydra's `Hydra.format_config_groups` (featvis.config.choices): --help lists the options a user
  can type, the ConfigStore's schema entries left out.
- wandb's `Image._initialize_from_path` (featvis.backends.wandb_child.size_from_header): the
  W&B worker sizes its pictures from their headers and moves them into the run.
"""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from featvis.model.load import load_model


@pytest.fixture(scope="module")
def demo_model():
    return load_model("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu").model


def test_mmengine_load_checkpoint_to_model_loads_a_state_dict_with_key_revision():
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    params = inspect.signature(_load_checkpoint_to_model).parameters
    assert list(params)[:2] == ["model", "checkpoint"] and {"strict", "revise_keys"} <= set(params)
    model = nn.Conv2d(1, 2, 1)
    state = {"state_dict": {f"module.{k}": torch.full_like(v, 3.0) for k, v in model.state_dict().items()}}
    _load_checkpoint_to_model(model, state, strict=False, revise_keys=[(r"^module\.", "")])
    assert torch.equal(model.weight, torch.full_like(model.weight, 3.0))


def test_mmseg_preprare_data_prepares_an_image_as_inference_model_does(demo_model):
    from mmseg.apis.inference import _preprare_data

    image = np.zeros((32, 48, 3), np.uint8)
    data, is_batch = _preprare_data(image, demo_model)
    assert not is_batch and len(data["inputs"]) == 1 and len(data["data_samples"]) == 1
    assert data["inputs"][0].shape[0] == 3


def test_hydra_basic_sweeper_and_launcher_are_where_featvis_looks():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from featvis.sweep import plan

    assert f"{BasicSweeper.__module__}.{BasicSweeper.__name__}" == plan.BASIC_SWEEPER
    assert f"{BasicLauncher.__module__}.{BasicLauncher.__name__}" == plan.BASIC_LAUNCHER
    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y"])
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert jobs == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]


def test_hydra_config_loader_methods_featvis_wraps():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    load = inspect.signature(ConfigLoaderImpl.load_configuration).parameters
    assert list(load)[:3] == ["self", "config_name", "overrides"] and "run_mode" in load
    assert list(inspect.signature(ConfigLoaderImpl._load_single_config).parameters) == ["self", "default", "repo"]


def test_wandb_image_from_path_is_what_the_worker_replaces(tmp_path, monkeypatch):
    import cv2
    import wandb

    from featvis.backends.wandb_child import size_from_header

    original = wandb.Image._initialize_from_path
    assert list(inspect.signature(original).parameters) == ["self", "path"]
    path = tmp_path / "picture.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    wandbs = wandb.Image(str(path))
    monkeypatch.setattr(wandb.Image, "_initialize_from_path", original)  # restored after the test
    size_from_header(wandb)
    ours = wandb.Image(str(path))
    assert wandb.Image._initialize_from_path is not original
    assert (ours._width, ours._height, ours.format, ours._sha256, ours._size) == \
        (wandbs._width, wandbs._height, wandbs.format, wandbs._sha256, wandbs._size) == \
        (40, 24, "jpg", wandbs._sha256, path.stat().st_size)
    assert ours._is_tmp and not wandbs._is_tmp  # moved into the run when logged, not copied
    assert ours.image.size == (40, 24)  # pixels still readable on demand (wandb reopens the file)


def test_hydra_config_repository_finds_a_file_source_for_a_config(tmp_path):
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra._internal.defaults_list import _create_defaults_tree_impl
    from hydra.core.object_type import ObjectType
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the config sources, as Hydra does when it starts
    (tmp_path / "preset").mkdir()
    (tmp_path / "preset" / "x.yaml").write_text("a: 1\n")

    search = ConfigSearchPathImpl()
    search.append("test", f"file://{tmp_path}")
    repo = ConfigRepository(search)
    source = repo._find_object_source(config_path="preset/x", object_type=ObjectType.CONFIG)
    assert source.scheme() == "file" and source.path == str(tmp_path)
    assert source._normalize_file_name("preset/x") == "preset/x.yaml"
    assert list(inspect.signature(ConfigRepository.load_config).parameters) == ["self", "config_path"]
    assert {"repo", "root"} <= set(inspect.signature(_create_defaults_tree_impl).parameters)


def test_hydra_help_lists_groups_through_the_loader():
    """featvis.config.choices wraps Hydra.format_config_groups and lends its loader a filtered get_group_options."""
    from hydra._internal.hydra import Hydra

    assert list(inspect.signature(Hydra.format_config_groups).parameters) == ["self", "predicate", "compact"]
    assert "self.config_loader.get_group_options(group)" in inspect.getsource(Hydra.format_config_groups)
