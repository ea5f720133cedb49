"""model.cfg_options and model.scale: overrides of the mmseg config, and the one line of a too-small image."""

from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.apis import inference_model
from PIL import Image

from featvis.cli import one_line
from featvis.config.job import JobInfo
from featvis.data import dataset
from featvis.data import images as inputs
from featvis.data.mmseg_config import apply_options, canonical
from featvis.data.paths import resolve_model_config
from featvis.engine import forward_errors
from featvis.errors import ConfigError, ForwardError, InputError
from featvis.model import cache as model_cache
from featvis.model.load import ModelSource, load_model
from featvis.pipeline import job as pipeline
from featvis.sweep.plan import share_key
from tests.helpers import DEMO_IMAGE, compose_cfg, error_line, job_config, run_cli

DEMO = "featvis::configs/demo_pspnet.py"
DEMO_CKPT = "featvis::checkpoints/demo_pspnet.pth"
FAST = ("backends=[local]", "wandb.mode=disabled", "layers.names=[decode_head.conv_seg]")
SLIDE = {"model.test_cfg.mode": "slide", "model.test_cfg.+crop_size": [32, 32], "model.test_cfg.+stride": [24, 24]}


def _demo_config() -> Config:
    return Config.fromfile(str(resolve_model_config(DEMO)))


def _fed_and_backbone_calls(loaded) -> tuple:
    """(img_shape of a real inference on a demo scene (192x256), how often the backbone ran)."""
    calls = []
    handle = loaded.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = inference_model(loaded.model, np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))[..., ::-1].copy())
    finally:
        handle.remove()
    return tuple(result.metainfo["img_shape"]), len(calls)


def test_cfg_options_and_scale_change_what_the_built_model_does():
    plain = load_model(DEMO, DEMO_CKPT, "cpu")
    assert _fed_and_backbone_calls(plain) == ((192, 256), 1)  # the config's Resize (256, 256), keep_ratio; whole

    resized = load_model(DEMO, DEMO_CKPT, "cpu", cfg_options={"test_pipeline": {"1": {"scale": [64, 64]}}})
    assert resized.model.cfg.test_pipeline[1]["scale"] == (64, 64)  # a tuple, as mmcv's Resize expects
    assert _fed_and_backbone_calls(resized) == ((48, 64), 1)

    # whole -> slide: mode exists in the demo config, crop_size and stride are new (+); 48x64 in 32x32 crops
    # with stride 24: 2 x 3 windows
    sliding = load_model(DEMO, DEMO_CKPT, "cpu", cfg_options=SLIDE, scale=[64, 64])
    assert sliding.model.test_cfg == {"mode": "slide", "crop_size": (32, 32), "stride": (24, 24)}
    assert _fed_and_backbone_calls(sliding) == ((48, 64), 6)

    scaled = load_model(DEMO, DEMO_CKPT, "cpu", scale=[128, 128])  # model.scale: (w, h) of the test Resize
    assert _fed_and_backbone_calls(scaled) == ((96, 128), 1)


def test_nested_and_dotted_forms_from_the_command_line_are_the_same_options():
    nested = compose_cfg("+model.cfg_options.model.test_cfg.mode=whole",
                         "+model.cfg_options.test_pipeline.1.scale=[8,8]")
    dotted = compose_cfg("+model.cfg_options={model.test_cfg.mode: whole, test_pipeline.1.scale: [8,8]}")
    assert canonical(nested.model.cfg_options) == canonical(dotted.model.cfg_options) == (
        '{"model.test_cfg.mode": "whole", "test_pipeline.1.scale": [8, 8]}')
    cfg = apply_options(_demo_config(), dotted.model.cfg_options, dotted.model.scale)
    assert cfg.test_pipeline[1]["scale"] == (8, 8) and cfg.model.test_cfg.mode == "whole"
    # a model's source keeps them as a dict (flattened), and tells sources apart by their canonical string
    a = ModelSource.resolve(DEMO, DEMO_CKPT, nested.model.cfg_options)
    b = ModelSource.resolve(DEMO, DEMO_CKPT, {"model": {"test_cfg": {"mode": "whole"}},
                                              "test_pipeline.1.scale": [8, 8]})
    assert a.cfg_options == {"model.test_cfg.mode": "whole", "test_pipeline.1.scale": [8, 8]}
    other = ModelSource.resolve(DEMO, DEMO_CKPT, {"model.test_cfg.mode": "slide"})
    assert a == b and hash(a) == hash(b) and a != other


def test_a_misspelt_key_fails_in_one_line_naming_the_closest_key(tmp_path):
    cfg = job_config(f"image={DEMO_IMAGE}", *FAST, "+model.cfg_options.model.test_cfg.mdoe=slide")
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg, JobInfo(output_dir=tmp_path / "run"))
    line = one_line(err.value)
    assert "\n" not in line
    assert "'model.test_cfg.mdoe'" in line and "closest: model.test_cfg.mode" in line
    assert not (tmp_path / "run" / "featvis").exists()

    with pytest.raises(ConfigError, match=r"no 'model\.decode_haed' \(closest: model\.decode_head\.num_classes\)"):
        apply_options(_demo_config(), {"model.decode_haed.num_classes": 3}, None)
    with pytest.raises(ConfigError, match=r"test_pipeline is a list of 3"):
        apply_options(_demo_config(), {"test_pipeline.5.scale": [8, 8]}, None)


def test_a_plus_adds_a_key_the_config_lacks_and_only_below_keys_that_exist():
    cfg = apply_options(_demo_config(), {"model.test_cfg.+crop_size": [32, 32], "+featvis_note": {"a": 1}}, None)
    assert cfg.model.test_cfg.crop_size == (32, 32) and cfg.featvis_note == {"a": 1}
    with pytest.raises(ConfigError, match=r"no 'model\.test_cgf'"):  # the part before the + must exist
        apply_options(_demo_config(), {"model.test_cgf.+crop_size": [32, 32]}, None)


def test_replacing_a_dict_whole_with_delete():
    cfg = _demo_config()
    cfg.merge_from_dict({"model.test_cfg": {"mode": "slide", "crop_size": (8, 8), "stride": (8, 8)}})
    apply_options(cfg, {"model.test_cfg": {"_delete_": True, "mode": "whole"}}, None)
    assert cfg.model.test_cfg == {"mode": "whole"}


def test_scale_sets_every_test_resize_and_needs_one():
    cfg = apply_options(_demo_config(), None, [100, 50])
    assert cfg.test_pipeline[1]["scale"] == (100, 50)
    assert cfg.test_dataloader.dataset.pipeline[1]["scale"] == (100, 50)
    bare = Config(dict(test_pipeline=[dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]))
    with pytest.raises(ConfigError, match=r"model\.scale=\[8, 8\].*has no Resize in its test_pipeline "
                                          r"\(its transforms: LoadImageFromFile, PackSegInputs\)"):
        apply_options(bare, None, [8, 8])


def test_the_cache_keeps_models_of_other_options_apart():
    first = model_cache.load(DEMO, DEMO_CKPT, "cpu", cfg_options={"model": {"test_cfg": {"mode": "whole"}}})
    assert model_cache.load(DEMO, DEMO_CKPT, "cpu", cfg_options={"model.test_cfg.mode": "whole"}) is first
    other = model_cache.load(DEMO, DEMO_CKPT, "cpu", cfg_options=SLIDE)
    assert other is not first and other.model.test_cfg["mode"] == "slide"
    scaled = model_cache.load(DEMO, DEMO_CKPT, "cpu", cfg_options={"model.test_cfg.mode": "whole"}, scale=[64, 64])
    assert scaled is not first and scaled.model.cfg.test_pipeline[1]["scale"] == (64, 64)


def test_share_key_differs_with_cfg_options_and_scale():
    base = share_key(compose_cfg(*FAST))
    options = share_key(compose_cfg(*FAST, "+model.cfg_options={model.test_cfg.mode: whole}"))
    nested = share_key(compose_cfg(*FAST, "+model.cfg_options.model.test_cfg.mode=whole"))
    scaled = share_key(compose_cfg(*FAST, "model.scale=[64,64]"))
    assert None not in (base, options, scaled)
    assert len({base, options, scaled}) == 3
    assert nested == options


def test_dataset_images_come_from_the_data_root_cfg_options_sets(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        Image.new("L" if sub == "masks" else "RGB", (16, 12)).save(tmp_path / sub / "only.png")
    collected = dataset.collect_any("dataset:test", None, DEMO,
                                   cfg_options={"test_dataloader.dataset.data_root": str(tmp_path)})
    assert [s.image_path for s in collected.samples] == [tmp_path / "images" / "only.png"]


def _item(tmp_path: Path, size=(8, 8)) -> inputs.Loaded:
    path = tmp_path / "tiny.png"
    Image.new("RGB", size).save(path)
    return inputs.load(inputs.collect(str(path), None).samples[0])


def test_other_forward_errors_are_one_line_naming_the_image(tmp_path):
    item = _item(tmp_path)
    with pytest.raises(ForwardError) as err:
        with forward_errors.explained(load_model(DEMO, DEMO_CKPT, "cpu").model, item, DEMO):
            raise RuntimeError("boom\nmore lines")
    assert str(err.value) == ("model forward failed on tiny.png (8x8): RuntimeError: boom "
                              "(set FEATVIS_DEBUG=1 for the traceback)")


def test_a_too_small_image_is_one_line_through_the_cli(tmp_path):
    """SegFormer (MiT-B0, slide inference): an 8x8 input is smaller than its spatial-reduction kernel."""
    image = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (120, 30, 200)).save(image)
    proc = run_cli("model=segformer", "model.checkpoint=null", f"image={image}", "model.scale=[8,8]", *FAST,
                   f"hydra.run.dir={tmp_path / 'out'}")
    line = error_line(proc)
    assert line.startswith("featvis: error: image tiny.png is too small for this model "
                           "(model.config=mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py): "
                           "8x8 on disk, fed to it at 8x8 (width x height)")
    assert "Kernel size can't be greater than actual input size" in line
    assert "model.scale=[width,height] (now 8x8) or model.cfg_options" in line
    assert not (tmp_path / "out" / "featvis").exists()


def test_the_too_small_error_is_an_input_error(tmp_path):
    item = _item(tmp_path)
    err = forward_errors.forward_error(RuntimeError("Given input size: (4x3x3). Calculated output size: (4x0x0). "
                                                    "Output size is too small"),
                                       load_model(DEMO, DEMO_CKPT, "cpu", scale=[8, 8]).model, item, DEMO)
    assert isinstance(err, InputError) and getattr(err, "exit_code", 1) == 1
    assert str(err).startswith(f"image tiny.png is too small for this model (model.config={DEMO}): 8x8 on disk, "
                               "fed to it at 8x8 (width x height); the forward pass failed with: Given input size")


def test_an_override_without_the_plus_says_to_add_one():
    with pytest.raises(Exception) as err:
        compose_cfg("model.cfg_options.model.test_cfg.mode=whole")
    assert one_line(err.value) == (
        "cannot set 'model.cfg_options.model': keys new to model.cfg_options take a leading +, e.g. "
        "+model.cfg_options.model.test_cfg.mode=whole or '+model.cfg_options={model.test_cfg.mode: whole}'")


def test_the_listing_gives_the_same_line_for_a_too_small_image(tmp_path):
    from featvis.pipeline.listing import list_modules

    image = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(image)
    cfg = job_config("mode=list", "model=segformer", "model.checkpoint=null", f"image={image}", "model.scale=[8,8]")
    with pytest.raises(InputError, match=r"^image tiny\.png is too small for this model .*: 8x8 on disk, fed to it "
                                         r"at 8x8 \(width x height\); the forward pass failed with: Calculated"):
        list_modules(cfg)


def test_scale_sets_a_shortest_edge_resize_as_san_uses():
    from mmengine.config import Config

    from featvis.data.mmseg_config import set_test_scale

    cfg = Config(dict(test_pipeline=[dict(type="LoadImageFromFile"),
                                     dict(type="ResizeShortestEdge", scale=(640, 640), max_size=2560)]))
    set_test_scale(cfg, (512, 384))
    assert (cfg.test_pipeline[1]["scale"], cfg.test_pipeline[1]["max_size"]) == (384, 512)
