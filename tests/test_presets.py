"""Any mmseg config works alone: names and defaults follow model.config, presets come from the model.

Real mmseg configs shipped in the wheel, built with random weights and fed a small photo
(`model.scale`), so each job takes a second or two: SegFormer MiT-B0 (token backbone),
Segmenter ViT-T (a ViT whose `backbone.layers` never runs), Semantic FPN (a neck), OCRNet
HRNet-18s (a cascade of two heads) and the demo PSPNet (an auxiliary head).
"""

from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
import torch
from torch import nn

from featvis.config.job import JobInfo
from featvis.config.schema import validate
from featvis.data.paths import ASSETS, SAMPLE_IMAGE
from featvis.engine.inference import check_drawn
from featvis.errors import ConfigError, LayerNotFoundError
from featvis.pipeline import job as pipeline
from featvis.pipeline import listing
from featvis.record import presets
from featvis.record.layers import Selected, select_layers
from featvis.record.recorded import Recorded
from featvis.record.recorder import FeatureRecorder
from featvis.reduce.base import Reduced
from tests.helpers import ROOT, compose_cfg, error_line, job_config, run_cli
from tests.helpers import listing_table as table

SEGFORMER = "mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
SEGMENTER = "mmseg::segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py"
FPN = "mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py"
OCRNET = "mmseg::ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py"
SMALL = ("model.checkpoint=null", "model.scale=[256,256]", "backends=[local]")


def _run(tmp_path: Path, *overrides: str):
    return pipeline.run(job_config(*overrides), JobInfo(output_dir=tmp_path))


def _maps(result) -> list:
    (stem,) = result.images
    return [p[len("featmap/"):] for p in result.panels[stem] if p.startswith("featmap/")]


def test_a_shipped_config_alone_names_itself_and_takes_its_metafile_checkpoint_and_no_demo_files():
    config = validate(compose_cfg(f"model.config={SEGFORMER}"))
    assert config.model.name == "segformer_mit-b0_8xb2-160k_ade20k-512x512"
    assert config.model.checkpoint.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/segformer/")
    assert (config.image, config.gt_mask) == (SAMPLE_IMAGE, None)  # not the demo scenes, nor their masks


def test_a_config_of_your_own_needs_its_checkpoint_said(tmp_path):
    own = tmp_path / "my_pspnet.py"
    own.write_text((ROOT / "featvis" / "assets" / "configs" / "demo_pspnet.py").read_text())
    with pytest.raises(ConfigError, match="my_pspnet.py' is a config of your own.*model.checkpoint=null"):
        validate(compose_cfg(f"model.config={own}"))
    config = validate(compose_cfg(f"model.config={own}", "model.checkpoint=null"))
    assert config.model.name == "my_pspnet" and config.gt_mask is None and config.image == SAMPLE_IMAGE
    # the demo's masks go with the demo model on the demo scenes only
    assert validate(compose_cfg(f"model.config={own}", "model.checkpoint=null",
                                "image=featvis::demo/images")).gt_mask is None


def test_a_config_of_your_own_without_a_checkpoint_is_one_line_from_the_cli(tmp_path):
    own = tmp_path / "mine.py"
    own.write_text((ROOT / "featvis" / "assets" / "configs" / "demo_pspnet.py").read_text())
    line = error_line(run_cli(f"model.config={own}", "backends=[local]", cwd=tmp_path))
    assert "is a config of your own" in line and "model.checkpoint=<a file or URL>" in line


def test_backbone_preset_one_map_per_stage_with_its_stride(tmp_path):
    result = _run(tmp_path, f"model.config={SEGFORMER}", *SMALL, "layers=backbone")
    assert _maps(result) == [f"backbone[{i}]" for i in range(4)]
    model = _model(SEGFORMER)
    strides = {name: r[0].stride for name, r in _record(model, presets.select(model, ["preset:backbone"], {})).items()}
    assert strides == {"backbone[0]": 4.0, "backbone[1]": 8.0, "backbone[2]": 16.0, "backbone[3]": 32.0}


def test_decoder_preset_gives_parts_in_run_order_then_classifier_input_and_logits(tmp_path):
    result = _run(tmp_path, f"model.config={FPN}", *SMALL)
    assert _maps(result) == [*(f"decode_head.scale_heads.{i}" for i in range(4)),
                             "decode_head.conv_seg/input", "decode_head.conv_seg"]
    featmap = tmp_path / "featvis" / "local" / "grace_hopper" / "featmap"
    assert (featmap / "decode_head.conv_seg" / "input.png").is_file()  # beside decode_head.conv_seg.png


def test_neck_preset_one_map_per_neck_output_and_a_model_without_a_neck_says_so(tmp_path):
    assert _maps(_run(tmp_path / "fpn", f"model.config={FPN}", *SMALL, "layers=neck")) == [
        f"neck[{i}]" for i in range(4)]
    with pytest.raises(LayerNotFoundError, match=r"no 'neck' preset \(it has no neck\); use one of"):
        _run(tmp_path / "demo", "layers=neck", "backends=[local]")


def test_every_head_of_a_cascade_gives_its_classifier(tmp_path):
    maps = _maps(_run(tmp_path, f"model.config={OCRNET}", *SMALL))
    assert {"decode_head.0.conv_seg", "decode_head.1.conv_seg"} <= set(maps)
    assert maps.index("decode_head.0.conv_seg") < maps.index("decode_head.1.bottleneck")  # the order they ran


def test_a_vit_backbone_draws_its_stages_and_its_layers_container_is_refused(tmp_path):
    assert _maps(_run(tmp_path / "a", f"model.config={SEGMENTER}", *SMALL, "layers=backbone")) == ["backbone[0]"]
    with pytest.raises(LayerNotFoundError, match=r"backbone.layers is a container that never runs; its elements "
                                                 r"backbone.layers.0 backbone.layers.1 backbone.layers.2 \.\.\. do"):
        _run(tmp_path / "b", f"model.config={SEGMENTER}", *SMALL, "layers.names=[backbone.layers]")


def test_auxiliary_preset_runs_the_auxiliary_head_so_it_draws(tmp_path):
    maps = _maps(_run(tmp_path, "layers=auxiliary", "backends=[local]", "image=featvis::demo/images/scene_000.png"))
    assert maps == ["auxiliary_head.convs", "auxiliary_head.conv_seg"]  # its classifier input is the convs' output


def test_the_classifier_input_is_not_drawn_twice(tmp_path):
    maps = _maps(_run(tmp_path, "backends=[local]", "image=featvis::demo/images/scene_000.png"))
    assert "decode_head.conv_seg/input" not in maps and "decode_head.bottleneck" in maps  # the same tensor
    model = _model("featvis::configs/demo_pspnet.py")
    recorded = _record(model, presets.select(model, ["preset:decoder"], {}))
    assert "decode_head.conv_seg/input" not in recorded
    assert recorded["decode_head.bottleneck"][0].note == "also decode_head.conv_seg/input"  # said in its caption


def test_a_layer_that_never_runs_fails_on_the_first_image_with_nothing_looking_complete(tmp_path):
    with pytest.raises(LayerNotFoundError, match="layer decode_head.loss_decode never ran in the forward pass"):
        _run(tmp_path, "layers.names=[decode_head.loss_decode]", "backends=[local]")
    assert not (tmp_path / "featvis").exists()


def test_a_job_with_no_map_at_all_fails():
    item = SimpleNamespace(sample=SimpleNamespace(image_path=Path("a.png")))
    layer = Selected("head", nn.Identity())
    with pytest.raises(LayerNotFoundError, match="no feature map to draw on a.png: head: output of type"):
        check_drawn(Recorded(item, None, {}), [layer],
                    SimpleNamespace(ran={"head"}, skipped={"head": {"head": "output of type int holds no tensor"}}))


def test_preset_layers_are_drawn_in_the_order_they_run():
    class Swapped(nn.Module):  # registered a, b; runs b, a
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.a(self.b(x))

    model = Swapped()
    specs = select_layers(model, ["a", "b"], optional=True)
    with FeatureRecorder(specs, lambda f, layer=None: Reduced(f[:1])) as rec:
        model(torch.zeros(1, 1, 4, 4))
        assert list(rec.pop_layers()) == ["b", "a"]
    with FeatureRecorder(select_layers(model, ["a", "b"]), lambda f, layer=None: Reduced(f[:1])) as rec:
        model(torch.zeros(1, 1, 4, 4))
        assert list(rec.pop_layers()) == ["a", "b"]  # the user's own order


@pytest.mark.parametrize("config", [SEGFORMER, "featvis::configs/demo_pspnet.py"])
def test_the_listing_never_tags_a_module_that_does_not_run(config):
    text = listing.list_modules(job_config("mode=list", f"model.config={config}", *SMALL[:2]))
    tagged = {name: row for name, row in table(text).items() if row[2]}
    assert tagged and all(row[1] != listing.NOT_RUN for row in tagged.values()), tagged
    assert any("decoder" in row[2] for row in tagged.values()) and "backbone" in tagged["backbone"][2]


def _model(config: str):
    from featvis.model.load import load_model

    return load_model(config, None, "cpu", scale=[256, 256]).model


def _record(model, layers):
    from mmseg.apis import inference_model

    image = cv2.resize(cv2.imread(str(ASSETS / "sample" / "grace_hopper.jpg")), (256, 300))
    with FeatureRecorder(layers, lambda f, layer=None: Reduced(f[:1]), watch=model.backbone, root=model) as rec:
        inference_model(model, image)
        return {sub: maps for subs in rec.pop_layers().values() for sub, maps in subs.items()}
