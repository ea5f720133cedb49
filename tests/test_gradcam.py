"""Grad-CAM on the demo PSPNet: it must point at the class, leave the model as it was,
and return the same prediction as mmseg's inference_model."""

from pathlib import Path

import pytest
import torch
from torch import nn

from featvis.errors import ReductionError
from featvis.record.gradcam import check_supported, gradcam_maps
from featvis.record.layers import select_layers

cv2 = pytest.importorskip("cv2")
ASSETS = Path(__file__).resolve().parents[1] / "featvis" / "assets" / "demo"
CIRCLE = 1


@pytest.fixture(scope="module")
def demo():
    from featvis.model.load import load_model
    return load_model("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu")


def _scene(name: str):
    image = cv2.imread(str(ASSETS / "images" / f"{name}.png"))
    mask = cv2.imread(str(ASSETS / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    return image, mask


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_gradcam_for_circle_highlights_the_circle_and_leaves_the_model_clean(demo):
    from mmseg.apis import inference_model

    model = demo.model
    image, mask = _scene("scene_000")
    hooks_before = _hooks(model)
    layers = select_layers(model, ["decode_head.bottleneck"])
    result = gradcam_maps(model, image, layers, CIRCLE)

    assert list(result.maps) == ["decode_head.bottleneck"]
    cam = result.maps["decode_head.bottleneck"].maps
    assert cam.shape == (1, 24, 32) and cam.dtype == torch.float32 and cam.min() >= 0
    up = cv2.resize(cam[0].numpy(), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    circle = mask == CIRCLE
    # measured: about 120x on scene_000
    assert up[circle].mean() > 2 * up[~circle].mean()
    assert result.target_pixels > 0 and not result.all_pixels and "circle" in result.note

    assert _hooks(model) == hooks_before
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    expected = inference_model(model, image)
    assert torch.equal(result.sample.pred_sem_seg.data, expected.pred_sem_seg.data)
    assert result.sample.metainfo["ori_shape"] == expected.metainfo["ori_shape"]


def test_gradcam_names_tuple_outputs_like_the_recorder_and_keeps_the_user_order(demo):
    image, _ = _scene("scene_001")
    layers = select_layers(demo.model, ["decode_head.conv_seg", "backbone[3]", "decode_head.psp_modules",
                                        "auxiliary_head.conv_seg"])
    result = gradcam_maps(demo.model, image, layers, CIRCLE)
    assert list(result.maps) == ["decode_head.conv_seg", "backbone[3]"] + [
        f"decode_head.psp_modules[{i}]" for i in range(4)]
    assert all(r.maps.shape == (1, 24, 32) for r in result.maps.values())
    assert "did not run" in result.skipped["auxiliary_head.conv_seg"]  # the auxiliary head is training-only
    assert all(p.grad is None for p in demo.model.parameters())


def test_gradcam_without_the_class_in_the_prediction_uses_all_pixels(demo):
    image, mask = _scene("scene_000")
    assert not (mask == 3).any()  # no triangle in this scene
    result = gradcam_maps(demo.model, image, select_layers(demo.model, ["decode_head.bottleneck"]), 3)
    if result.target_pixels == 0:  # the model predicts no triangle pixel either
        assert result.all_pixels and "all pixels" in result.note
    assert result.maps["decode_head.bottleneck"].maps.shape == (1, 24, 32)


def test_gradcam_refuses_slide_inference_and_unknown_classes(demo, monkeypatch):
    image, _ = _scene("scene_000")
    layers = select_layers(demo.model, ["decode_head.bottleneck"])
    with pytest.raises(ReductionError, match="out of range"):
        gradcam_maps(demo.model, image, layers, 9)
    check_supported(demo.model)
    monkeypatch.setitem(demo.model.test_cfg, "mode", "slide")
    with pytest.raises(ReductionError, match="whole inference only"):
        check_supported(demo.model)
    with pytest.raises(ReductionError, match="whole inference only"):
        gradcam_maps(demo.model, image, layers, CIRCLE)
    assert _hooks(demo.model) == 0
