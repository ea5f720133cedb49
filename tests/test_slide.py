"""Slide inference: each layer gives one map of the whole image, stitched and averaged like mmseg's logits."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from featvis.record.layers import select_layers
from featvis.record.recorder import FeatureRecorder
from featvis.record.slide import SlideWindows
from featvis.reduce.registry import create
from featvis.render.draw import scale_bar_rows
from tests.helpers import job_config, run_cli

CROP, STRIDE, H, W = 32, 24, 32, 80  # three windows across: x in [0,32), [24,56), [48,80)


def _register_probe():
    from mmseg.registry import MODELS

    @MODELS.register_module(name="SlideProbe", force=True)
    class SlideProbe(nn.Module):
        """Outputs what is known analytically: the input average-pooled by 4 (a function of
        absolute position, identical where windows overlap) and the index of the window plus
        10 x the row (rows differ, so it is a map, not one value per window)."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            pooled = F.avg_pool2d(x, 4)
            marker = torch.full_like(pooled[:, :1], float(self.calls))
            marker += 10 * torch.arange(marker.shape[-2], dtype=marker.dtype).view(-1, 1)
            self.calls += 1
            return [pooled, marker]


FCN_HEAD = dict(type="FCNHead", in_channels=3, in_index=0, channels=4, num_convs=1, num_classes=3, norm_cfg=None,
                align_corners=False)


def _model(decode_head: dict = FCN_HEAD):
    """The SlideProbe backbone under `decode_head`, in slide inference."""
    from mmseg.apis import init_model

    _register_probe()
    cfg = Config(dict(
        model=dict(type="EncoderDecoder",
                   data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1],
                                          bgr_to_rgb=False),
                   backbone=dict(type="SlideProbe"),
                   decode_head=decode_head,
                   test_cfg=dict(mode="slide", crop_size=(CROP, CROP), stride=(STRIDE, STRIDE))),
        test_pipeline=[dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]))
    return init_model(cfg, None, device="cpu")


def _image():
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x, y, x + y], -1).astype(np.uint8)  # every pixel says where it is


def test_windows_follow_mmseg_order_and_cover_the_input():
    assert SlideWindows((CROP, CROP), (STRIDE, STRIDE)).windows(H, W) == [(0, 32, 0, 32), (0, 32, 24, 56),
                                                                          (0, 32, 48, 80)]
    windows = SlideWindows((1024, 1024), (768, 768)).windows(1024, 2048)
    assert len(windows) == 3 and windows[-1] == (0, 1024, 1024, 2048)


def test_stitched_map_equals_the_whole_image_map_pixel_by_pixel():
    from mmseg.apis import inference_model

    model = _model()
    image = _image()
    with FeatureRecorder(select_layers(model, ["backbone", "decode_head.conv_seg"]), create("squeeze_mean"),
                         watch=model.backbone, root=model) as rec:
        inference_model(model, image)
        maps = rec.pop()
    assert list(maps) == ["backbone[0]", "backbone[1]", "decode_head.conv_seg"]  # one map each, no name#2
    whole = F.avg_pool2d(torch.from_numpy(image).permute(2, 0, 1)[None].float(), 4)[0].mean(0)
    assert torch.allclose(maps["backbone[0]"][0].maps[0], whole, atol=1e-4)
    # overlaps are averaged as mmseg averages logits: columns seen by windows 0+1 and 1+2
    expected = torch.tensor([0.0] * 6 + [0.5] * 2 + [1.0] * 4 + [1.5] * 2 + [2.0] * 6).expand(H // 4, -1)
    expected = expected + 10 * torch.arange(H // 4, dtype=torch.float32).view(-1, 1)
    assert torch.equal(maps["backbone[1]"][0].maps[0], expected)
    assert maps["decode_head.conv_seg"][0].maps.shape == (1, H // 4, W // 4)


def test_select_max_picks_one_channel_for_the_whole_image():
    from mmseg.apis import inference_model

    model = _model()
    with FeatureRecorder(select_layers(model, ["backbone[0]"]), create("select_max"),
                         watch=model.backbone, root=model) as rec:
        inference_model(model, _image())
        (reduced,) = rec.pop()["backbone[0]"]
    assert reduced.channels == [2]  # x + y: the largest sum over the whole image, in every window


@pytest.mark.slow
def test_segformer_slide_inference_gives_one_stitched_map_per_layer(tmp_path):
    import cv2

    image = tmp_path / "city.png"  # the test pipeline resizes it to 1024x2048: three 1024x1024 windows
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8))
    out = tmp_path / "X"
    proc = run_cli("model=segformer", "model.checkpoint=null", "layers=decoder", f"image={image}",
                   "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    maps = sorted(p.stem for p in (out / "featvis" / "local" / "city" / "featmap").iterdir())
    assert maps == ["decode_head.conv_seg", "decode_head.convs.0", "decode_head.convs.1", "decode_head.convs.2",
                    "decode_head.convs.3", "decode_head.fusion_conv"]
    picture = cv2.imread(str(out / "featvis" / "local" / "city" / "featmap" / "decode_head.fusion_conv.png"))
    assert picture.shape == (128 + scale_bar_rows(128, 256), 256, 3)  # the map, its colour scale below


def test_whole_mode_maps_are_cropped_of_padding_and_resized_back_to_the_original():
    """Keep-ratio resize x2, then padding to a multiple of 32: the drawn map must line up
    with the original image, with no padding dragged into it."""
    from mmseg.apis import inference_model, init_model

    from featvis.render.heatmap import align

    _register_probe()
    cfg = Config(dict(
        model=dict(type="EncoderDecoder",
                   data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1],
                                          bgr_to_rgb=False, size_divisor=32, test_cfg=dict(size_divisor=32)),
                   backbone=dict(type="SlideProbe"),
                   decode_head=dict(type="FCNHead", in_channels=3, in_index=0, channels=4, num_convs=1,
                                    num_classes=3, norm_cfg=None, align_corners=False),
                   test_cfg=dict(mode="whole")),
        test_pipeline=[dict(type="LoadImageFromFile"), dict(type="Resize", scale=(140, 60), keep_ratio=True),
                       dict(type="PackSegInputs")]))
    model = init_model(cfg, None, device="cpu")
    h, w = 30, 70
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x, y, x + y], -1).astype(np.uint8)
    with FeatureRecorder(select_layers(model, ["backbone[0]"]), create("squeeze_mean"),
                         watch=model.backbone, root=model) as rec:
        sample = inference_model(model, image)
        (reduced,) = rec.pop()["backbone[0]"]
    assert tuple(sample.metainfo["img_shape"]) == (60, 140) and reduced.maps.shape == (1, 16, 40)  # padded 64x160
    drawn = align(reduced.maps[0], sample.metainfo, (h, w))
    expected = (2 * x + 2 * y) / 3  # the channel mean of the image itself
    assert drawn.shape == (h, w)
    assert np.abs(drawn - expected).max() < 2.5  # pooling and resampling blur, nothing more
    uncropped = align(reduced.maps[0], {}, (h, w))  # what drawing the padded map would give
    assert np.abs(uncropped - expected).max() > 20


def _psp_slide_model():
    """SlideProbe under a PSPHead: pool scale 1 is global pooling, one value per window under slide.
    No activation: every channel is an affine function of the window's mean, so windows differ."""
    return _model(dict(type="PSPHead", in_channels=3, in_index=0, channels=4, pool_scales=(1, 2), num_classes=3,
                       norm_cfg=None, act_cfg=None, align_corners=False))


def test_global_pooling_under_slide_is_flagged_not_drawn_as_a_gradient():
    from mmseg.apis import inference_model

    from featvis.record.slide import PER_WINDOW_NOTE
    from featvis.render.heatmap import overlay_maps
    from featvis.render.panels import panel_caption

    model = _psp_slide_model()
    image = _image()
    specs = ["decode_head.psp_modules", "decode_head.psp_modules.0", "decode_head.bottleneck"]
    with FeatureRecorder(select_layers(model, specs), create("select_max"), watch=model.backbone, root=model) as rec:
        inference_model(model, image)
        maps = rec.pop()
    # the 1x1 pooled map (two values side by side once stitched) and its broadcast to the window's size
    for name in ("decode_head.psp_modules.0", "decode_head.psp_modules[0]"):
        (reduced,) = maps[name]
        assert reduced.note == PER_WINDOW_NOTE, name
        values = reduced.maps[0]
        assert torch.equal(values, values.flatten()[0].expand_as(values)), name  # constant: nothing to colour
        drawn = overlay_maps(reduced.maps, image, {}, 0.5, scale_bar=True)
        assert np.array_equal(drawn.picture, image) and drawn.scales == [None]  # the plain image, no gradient
        warned = set()
        caption = panel_caption("probe", name, "select_max", reduced, warned)
        assert caption.endswith(PER_WINDOW_NOTE) and "constant map" not in caption
        assert (name, PER_WINDOW_NOTE) in warned  # and logged, once per layer
    # pool scale 2 varies inside each window, and the bottleneck is a real map: stitched and drawn as before
    for name in ("decode_head.psp_modules[1]", "decode_head.bottleneck"):
        (reduced,) = maps[name]
        assert reduced.note is None and reduced.maps[0].std() > 0, name


def test_a_map_constant_over_the_whole_image_is_still_just_constant():
    """Every window gives the same value (a layer that ignores its input): no per-window note."""
    from featvis.record.slide import Stitcher

    stitcher = Stitcher((H, W))
    for window in SlideWindows((CROP, CROP), (STRIDE, STRIDE)).windows(H, W):
        stitcher.add(torch.full((1, 2, 1, 1), 5.0), window)
    assert not stitcher.per_window and stitcher.note is None
    result = stitcher.result()
    assert result.shape[:2] == (1, 2) and (result == 5.0).all()


def test_demo_pspnet_under_slide_draws_its_pooling_branch_as_the_plain_image(tmp_path, caplog):
    """The README's case: PSPNet's pool scale 1 with test_cfg.mode=slide (six 128x128 windows)."""
    import logging

    import cv2

    from featvis.config.job import JobInfo
    from featvis.data.paths import ASSETS
    from featvis.pipeline import job as pipeline
    from featvis.record.slide import PER_WINDOW_NOTE
    from tests.helpers import DEMO_IMAGE

    config = tmp_path / "demo_slide.py"
    config.write_text(f"_base_ = [{str(ASSETS / 'configs' / 'demo_pspnet.py')!r}]\n"
                      "model = dict(test_cfg=dict(mode='slide', crop_size=(128, 128), stride=(96, 96)))\n")
    with caplog.at_level(logging.WARNING):
        pipeline.run(job_config(f"model.config={config}", "model.checkpoint=featvis::checkpoints/demo_pspnet.pth",
                                 f"image={DEMO_IMAGE}", "backends=[local]", "layers.names=[decode_head.psp_modules]"),
                     JobInfo(output_dir=tmp_path / "job"))
    folder = tmp_path / "job" / "featvis" / "local" / DEMO_IMAGE.stem / "featmap"
    image = cv2.imread(str(DEMO_IMAGE))
    assert np.array_equal(cv2.imread(str(folder / "decode_head.psp_modules[0].png")), image)
    assert not np.array_equal(cv2.imread(str(folder / "decode_head.psp_modules[1].png"))[:image.shape[0]], image)
    flagged = [r.getMessage() for r in caplog.records if PER_WINDOW_NOTE in r.getMessage()]
    assert len(flagged) == 1 and flagged[0].startswith("decode_head.psp_modules[0] ")
