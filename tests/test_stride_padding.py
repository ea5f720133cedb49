"""Any image size on networks whose input must be a multiple of their stride (DDRNet, PIDNet).

Tiny DDRNet and PIDNet (mmseg's own backbones and heads from the shipped cityscapes configs,
channels shrunk through model.cfg_options, random weights) on a 451x300 photo fed at its own
size: 451 is odd, so both fail unpadded ("The size of tensor a (57) must match ... (56)").
featvis finds their stride with a probe, pads as mmseg pads (SegDataPreProcessor
test_cfg=dict(size_divisor=8)) and crops every picture back. A model that takes any size is
never probed. Errors that padding does not cure stay one line, and say what they are.
"""

import sys
from functools import partial
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmseg.apis import inference_model
from mmseg.apis.inference import _preprare_data
from mmseg.models.segmentors import EncoderDecoder
from torch import nn

from featvis.compare.sketch import SKETCH_FILE, Sketch, positions, sample
from featvis.config.job import JobInfo
from featvis.data import images as inputs
from featvis.data.paths import ASSETS
from featvis.engine.forward_errors import run_explained
from featvis.errors import InputError
from featvis.model import cache as model_cache
from featvis.model import stride
from featvis.pipeline import job as pipeline
from featvis.render.align import align
from featvis.render.heatmap import overlay_maps
from featvis.render.labels import overlay_labels
from featvis.render.scales import ScaleRule
from tests.helpers import compose_cfg, job_config

H, W = 300, 451  # the photo: 451 is odd, 300 = 4 x 75
SHRINK = ("model.backbone.init_cfg: null, model.backbone.channels: 8, model.backbone.ppm_channels: 16, "
          "model.decode_head.in_channels: 32, model.decode_head.channels: 16")
MODELS = {
    "ddrnet": "mmseg::ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py",
    "pidnet": "mmseg::pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py",
}
QUIET = ("backends=[local]", "wandb.mode=disabled", "normalize.scale_bar=false")  # pictures: exactly the image's size


def _photo(folder: Path, name: str = "photo.jpg", size=(W, H)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(ASSETS / "sample" / "grace_hopper.jpg")), size))
    return path


def _cfg(family: str, image: Path, *more: str, options: str = ""):
    """The tiny `family` model on `image`, fed at 451x300; `options`: more model.cfg_options entries."""
    return job_config(f"model.config={MODELS[family]}", "model.checkpoint=null", f"image={image}",
                       "model.scale=[451,300]", f"+model.cfg_options={{{SHRINK}{options}}}", *QUIET, *more)


def _loaded(cfg):
    """The model the job ran (featvis.model.cache keeps it): its weights are the job's random ones."""
    c = cfg
    return model_cache.load(c.model.config, c.model.checkpoint, c.device, trust_checkpoint=c.model.trust_checkpoint,
                            strict=c.model.strict, cfg_options=c.model.cfg_options, scale=c.model.scale)


# the code that runs the model on the job's images, or probes its stride (not the memory budget's probes)
RUNS_IMAGES = ("featvis/engine/inference.py", "featvis/model/stride.py", "featvis/engine/forward_errors.py")


@pytest.fixture
def forwards(monkeypatch) -> List[tuple]:
    """The (h, w) of every segmentor forward pass (EncoderDecoder.inference) that featvis runs for the
    images or to find the stride: the failed ones and the probes included."""
    calls: List[tuple] = []
    original = EncoderDecoder.inference

    def counted(self, inputs_, metas):
        frame = sys._getframe(1)
        while frame is not None and not frame.f_code.co_filename.replace("\\", "/").endswith(RUNS_IMAGES):
            frame = frame.f_back
        if frame is not None:
            calls.append(tuple(inputs_.shape[-2:]))
        return original(self, inputs_, metas)

    monkeypatch.setattr(EncoderDecoder, "inference", counted)
    return calls


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _padded_by_hand(model: nn.Module, bgr: np.ndarray, divisor: int):
    """mmseg on the input padded by hand (bottom/right zeros after normalization, as stack_batch pads):
    (the unpadded normalized input, the class map cropped back, decode_head.conv_seg's output)."""
    saved = model.data_preprocessor.test_cfg
    model.data_preprocessor.test_cfg = None  # the input unpadded; padded below
    seen = []
    handle = model.decode_head.conv_seg.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            x = model.data_preprocessor(_preprare_data(bgr, model)[0], False)["inputs"]
            h, w = x.shape[-2:]
            ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
            logits = model.encode_decode(F.pad(x, (0, pw - w, 0, ph - h)), [dict(img_shape=(ph, pw),
                                                                                pad_shape=(ph, pw))])
    finally:
        handle.remove()
        model.data_preprocessor.test_cfg = saved
    return x[0], logits[0, :, :h, :w].argmax(0).numpy(), seen[0][0]


@pytest.mark.parametrize("family", ["ddrnet", "pidnet"])
def test_a_stride_network_runs_on_an_odd_image_and_every_picture_is_cropped_back(tmp_path, forwards, family):
    image = _photo(tmp_path)
    cfg = _cfg(family, image, "reduction=squeeze_mean", "layers.names=[backbone/input,decode_head.conv_seg]",
               "compare.sketch=true")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "out"))
    loaded = _loaded(cfg)
    model = loaded.model
    assert stride.padded_to(model) == 8 and stride.found(model).probes == 1
    # the unpadded pass failed, one probe of two odd multiples of 8 ran, then the padded image
    assert forwards == [(H, W), stride.probe_hw(8), (304, 456)]
    folder = tmp_path / "out" / "featvis" / "local" / "photo"
    for panel in result.panels["photo"]:
        assert _rgb(folder / f"{panel}.png").shape == (H, W, 3), panel

    bgr = cv2.imread(str(image))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    x, pred, logits_map = _padded_by_hand(model, bgr, 8)
    palette = loaded.dataset_meta["palette"]
    assert np.array_equal(_rgb(folder / "prediction.png"), overlay_labels(pred, rgb, palette, 0.5))

    rule = ScaleRule.from_config(cfg.normalize)
    draw = partial(overlay_maps, image=rgb, meta={}, alpha=cfg.alpha, scale=rule)
    # what entered the backbone, padded to 304x456, drawn cropped: the image's own pixels, no padding band
    assert np.array_equal(_rgb(folder / "featmap" / "backbone" / "input.png"),
                          draw(x.mean(0, keepdim=True)).picture)
    # a 1/8 map of the padded input (38x57) ends inside a cell (37.5 x 56.375 cover the image):
    # drawn as mmseg treats its logits, resized to the padded input and cut to the image
    cut = cv2.resize(logits_map.mean(0).numpy(), (456, 304), interpolation=cv2.INTER_LINEAR)[:H, :W]
    assert np.array_equal(_rgb(folder / "featmap" / "decode_head.conv_seg.png"),
                          draw(torch.from_numpy(cut)[None]).picture)
    # the compare sketch samples the image's points, not the padded input's: the backbone's input
    # there is the unpadded image's, and its kept map is the image's part only
    sketch = Sketch(tmp_path / "out" / "featvis" / SKETCH_FILE)
    assert np.array_equal(sketch.features("photo", "backbone/input"), sample(x, positions(256, 0)))
    assert sketch.map("photo", "backbone/input").shape == (H, W)
    assert sketch.map("photo", "decode_head.conv_seg").shape == (38, 56)  # 37.5 x 56.375 cells, rounded


def test_a_model_that_takes_any_size_is_never_probed(tmp_path, forwards, monkeypatch):
    monkeypatch.setattr(stride, "find", lambda model: pytest.fail("probed a model that takes any size"))
    result = pipeline.run(job_config(*QUIET), JobInfo(output_dir=tmp_path / "out"))  # the 3 demo scenes
    model = _loaded(compose_cfg(*QUIET)).model
    assert len(result.images) == 3 and forwards == [(192, 256)] * 3  # one pass per image, nothing else
    assert model.data_preprocessor.test_cfg is None and stride.found(model) is None


def test_a_batch_is_padded_when_it_fails_and_the_stride_is_found_once_per_cached_model(tmp_path, forwards):
    """a: 456x304, a multiple of 8, runs unpadded; b and c (451x300, fed at 456x303) fail in one batch,
    which is run again padded. The next job on the cached model pads from the start: no probe."""
    folder = tmp_path / "images"
    _photo(folder, "a.jpg", (456, 304))
    _photo(folder, "b.jpg")
    _photo(folder, "c.jpg")
    cfg = job_config(f"model.config={MODELS['ddrnet']}", "model.checkpoint=null", f"image={folder}",
                      "model.scale=[456,304]", f"+model.cfg_options={{{SHRINK}}}", *QUIET, "batch_size=2")
    first = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "one"))
    assert forwards == [(304, 456), (303, 456), stride.probe_hw(8), (304, 456)]
    assert first.passes == 2 and first.forwards == 3
    # what the failed batch recorded was dropped: no second call (`name#2`) of any layer
    assert first.panels["b"] == first.panels["c"] == first.panels["a"]
    for stem, (w, h) in {"a": (456, 304), "b": (W, H), "c": (W, H)}.items():
        for panel in first.panels[stem]:
            assert _rgb(tmp_path / "one" / "featvis" / "local" / stem / f"{panel}.png").shape == (h, w, 3)

    forwards.clear()
    second = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "two"))
    assert forwards == [(304, 456), (304, 456)] and second.passes == 2
    assert stride.found(_loaded(cfg).model).probes == 1


def test_grad_cam_on_a_padded_model_crops_its_maps_and_prediction(tmp_path, forwards):
    image = _photo(tmp_path)
    cfg = _cfg("ddrnet", image, "reduction=gradcam", "reduction.target_class=0",
               "layers.names=[decode_head.head]")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "out"))
    loaded = _loaded(cfg)
    assert stride.padded_to(loaded.model) == 8 and len(forwards) == 3
    folder = tmp_path / "out" / "featvis" / "local" / "photo"
    for panel in result.panels["photo"]:
        assert _rgb(folder / f"{panel}.png").shape == (H, W, 3), panel
    bgr = cv2.imread(str(image))
    _, pred, _ = _padded_by_hand(loaded.model, bgr, 8)
    expected = overlay_labels(pred, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), loaded.dataset_meta["palette"], 0.5)
    assert np.array_equal(_rgb(folder / "prediction.png"), expected)


def test_slide_inference_over_a_padded_input(tmp_path, forwards):
    """Windows 200x512 over 451x300: the window is the image's 451 columns, which fail; padded to
    456x304 every window runs (2 rows of windows), and the stitched maps are cropped back."""
    image = _photo(tmp_path)
    cfg = _cfg("ddrnet", image, "layers.names=[decode_head.conv_seg]",
               options=", model.test_cfg.mode: slide, model.test_cfg.+crop_size: [200, 512], "
                       "model.test_cfg.+stride: [150, 400]")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "out"))
    assert stride.padded_to(_loaded(cfg).model) == 8
    assert forwards[-1] == (304, 456)
    folder = tmp_path / "out" / "featvis" / "local" / "photo"
    for panel in result.panels["photo"]:
        assert _rgb(folder / f"{panel}.png").shape == (H, W, 3), panel


def test_the_listing_runs_a_padded_model_and_lists_one_pass(tmp_path):
    from featvis.pipeline.listing import list_modules

    text = list_modules(_cfg("ddrnet", _photo(tmp_path), "mode=list", "listing.filter=backbone.stem.0.conv"))
    assert "fed to the model as 300x451 padded to 304x456 (img_shape)" in text
    row = next(line for line in text.splitlines() if line.startswith("backbone.stem.0.conv "))
    assert "1x8x152x228" in row and " x2" not in row  # the failed pass is not counted


def test_a_really_too_small_input_is_still_called_too_small(tmp_path):
    cfg = _cfg("ddrnet", _photo(tmp_path), "model.scale=[6,4]")
    with pytest.raises(InputError) as err:
        pipeline.run(cfg, JobInfo(output_dir=tmp_path / "out"))
    assert str(err.value).startswith(f"image photo.jpg is too small for this model (model.config={MODELS['ddrnet']}): "
                                     "451x300 on disk, fed to it at 6x4 (width x height); the forward pass failed")
    assert str(err.value).endswith("use larger images, or a larger test resize with model.scale=[width,height] "
                                   "(now 6x4) or model.cfg_options")
    assert "\n" not in str(err.value)


# A backbone that raises a size mismatch by rule, to reach each wording of the error


class _Picky(nn.Module):
    rule = staticmethod(lambda h, w: False)  # (h, w) -> fails

    def forward(self, x):
        if self.rule(*x.shape[-2:]):
            raise RuntimeError("The size of tensor a (3) must match the size of tensor b (2) at non-singleton "
                               "dimension 3")
        return [x]


def _picky(rule, tmp_path: Path, size=(W, H)):
    from mmseg.apis import init_model
    from mmseg.registry import MODELS as REGISTRY

    REGISTRY.register_module(name="FeatvisPicky", module=_Picky, force=True)
    cfg = Config(dict(
        model=dict(type="EncoderDecoder",
                   data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1]),
                   backbone=dict(type="FeatvisPicky"),
                   decode_head=dict(type="FCNHead", in_channels=3, in_index=0, channels=4, num_convs=1,
                                    num_classes=3, norm_cfg=None, align_corners=False),
                   test_cfg=dict(mode="whole")),
        test_pipeline=[dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]))
    model = init_model(cfg, None, device="cpu")
    model.backbone.rule = rule
    item = inputs.load(inputs.collect(str(_photo(tmp_path, size=size)), None).samples[0])
    return model, item


def _error(model, item) -> str:
    with pytest.raises(InputError) as err:
        run_explained(lambda: inference_model(model, item.image_bgr), model, item, "picky.py")
    return str(err.value)


def test_a_size_mismatch_at_every_size_is_not_called_too_small_nor_the_stride(tmp_path, forwards):
    model, item = _picky(lambda h, w: True, tmp_path)
    message = _error(model, item)
    assert len(forwards) == 1 + len(stride.DIVISORS)  # the image, then a probe for each divisor
    assert message.startswith("image photo.jpg has a size this model cannot take (model.config=picky.py): 451x300 "
                              "on disk, fed to it at 451x300 (width x height); the forward pass failed with: The size")
    assert "failed too" in message and "so it is not the network's stride" in message
    assert "too small" not in message and model.data_preprocessor.test_cfg is None
    forwards.clear()
    _error(model, item)  # the model was probed once: the next failure says the same without probing
    assert len(forwards) == 1


def test_padding_that_does_not_help_is_said_and_taken_off(tmp_path):
    model, item = _picky(lambda h, w: w > 400, tmp_path)  # probes (248 wide) run; the image never does
    message = _error(model, item)
    assert message.startswith("image photo.jpg has a size this model cannot take (model.config=picky.py): 451x300 "
                              "on disk, fed to it at 451x300 and padded to 456x304 (width x height)")
    assert "padding to a multiple of the network's stride (8, at which it runs at 248x232) did not help" in message
    assert "too small" not in message
    assert model.data_preprocessor.test_cfg is None and stride.padded_to(model) is None  # as its config built it


def test_an_input_smaller_than_what_the_model_runs_at_is_too_small(tmp_path, forwards):
    model, item = _picky(lambda h, w: w < 100 or w % 8, tmp_path, size=(40, 30))
    message = _error(model, item)
    assert message.startswith("image photo.jpg is too small for this model (model.config=picky.py): 40x30 on disk, "
                              "fed to it at 40x30 and padded to 40x32 (width x height), while it runs at 248x232")
    assert model.data_preprocessor.test_cfg is None
    # the next image, large enough, is padded to the stride found then: no second probe
    forwards.clear()
    large = inputs.load(inputs.collect(str(_photo(tmp_path / "large")), None).samples[0])
    result = run_explained(lambda: inference_model(model, large.image_bgr), model, large, "picky.py")
    assert forwards == [(H, W), (304, 456)] and result.pred_sem_seg.shape == (H, W)
    assert stride.padded_to(model) == 8


def test_align_keeps_the_fraction_of_a_cell_that_covers_the_image():
    """A 4x4 map of a 16x16 padded input, the image 14x10: 3.5 x 2.5 cells; column 3 is padding only (-50).
    What is drawn is the map resized to the padded input and cut to the image, as mmseg cuts its logits."""
    fmap = np.arange(16, dtype=np.float32).reshape(4, 4)
    fmap[:, 3] = -50
    meta = {"img_shape": (14, 10), "pad_shape": (16, 16)}
    drawn = align(torch.from_numpy(fmap), meta, (14, 10))
    assert np.array_equal(drawn, cv2.resize(fmap, (16, 16), interpolation=cv2.INTER_LINEAR)[:14, :10])
    assert drawn.min() >= 0  # no padding in it
    twice = align(fmap, meta, (28, 20))  # to an original twice the size: the padded input at 32x32, cut
    assert np.array_equal(twice, cv2.resize(fmap, (32, 32), interpolation=cv2.INTER_LINEAR)[:28, :20])
