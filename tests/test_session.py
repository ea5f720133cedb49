"""featvis as a library: featvis.Session draws a model the caller built, with no Hydra, and gives back the
pictures the command line writes."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.visualization import Visualizer
from mmseg.apis import init_model

import featvis
from featvis.errors import ConfigError, InputError, LayerNotFoundError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "featvis" / "assets"
CONFIG, CHECKPOINT = ASSETS / "configs" / "demo_pspnet.py", ASSETS / "checkpoints" / "demo_pspnet.pth"
SCENE, MASK = ASSETS / "demo" / "images" / "scene_000.png", ASSETS / "demo" / "masks" / "scene_000.png"


@pytest.fixture(scope="module")
def model():
    return init_model(str(CONFIG), str(CHECKPOINT), device="cpu")


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.e2e
def test_a_plain_script_draws_the_command_lines_pixels_without_hydra_and_writes_nothing_here(tmp_path):
    job = tmp_path / "job"
    cli = subprocess.run([sys.executable, str(ROOT / "run.py"), "backends=[local]", f"hydra.run.dir={job}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    here = tmp_path / "here"
    here.mkdir()
    out = tmp_path / "pictures"
    script = textwrap.dedent(f"""
        import sys, json, cv2, numpy as np
        import featvis
        from mmseg.apis import init_model
        model = init_model({str(CONFIG)!r}, {str(CHECKPOINT)!r}, device="cpu")
        image = cv2.imread({str(SCENE)!r})
        mask = cv2.imread({str(MASK)!r}, cv2.IMREAD_UNCHANGED)
        with featvis.Session(model, layers="decoder", reduction="select_max") as session:
            pictures = session.draw(image, mask, name="scene_000")
        np.savez({str(out)!r}, **{{k.replace("/", "|"): v for k, v in pictures.items()}})
        print(json.dumps({{"hydra": [m for m in sys.modules if m == "hydra" or m.startswith("hydra.")]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=here, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"hydra": []}
    assert list(here.iterdir()) == []  # no backend given: nothing written where it ran
    drawn = {k.replace("|", "/"): v for k, v in np.load(f"{out}.npz").items()}
    local = job / "featvis" / "local" / "scene_000"
    written = {p.relative_to(local).with_suffix("").as_posix(): p for p in local.rglob("*.png")}
    assert set(drawn) == set(written) and len(drawn) == 9  # input, ground truth, prediction, 6 decoder maps
    for name, picture in drawn.items():
        reference = _rgb(written[name])
        assert picture.shape == reference.shape and picture.dtype == np.uint8, name
        assert np.abs(picture.astype(int) - reference.astype(int)).max() <= 1, name  # within 1/255


def test_the_session_removes_its_hooks_and_restores_the_models_mode_even_when_drawing_fails(model):
    model.train()
    with pytest.raises(InputError, match="does not exist"):
        with featvis.Session(model, layers=["decode_head.conv_seg"]) as session:
            assert not model.training and _hooks(model) > 0
            session.draw(cv2.imread(str(SCENE)))
            session.draw("/no/such/image.png")
    assert model.training and _hooks(model) == 0
    model.eval()
    with featvis.Session(model, layers=["backbone.layer4"]) as session:
        session.draw(str(SCENE))
    assert not model.training and _hooks(model) == 0


def test_two_sessions_on_one_model_one_after_the_other_and_a_batch_as_singles(model):
    image = cv2.imread(str(SCENE))
    with featvis.Session(model, layers=["backbone.layer2"], reduction="channel_max") as first:
        one = first.draw(image, name="a")
    with featvis.Session(model, layers=["backbone.layer2", "decode_head.conv_seg"],
                         reduction={"name": "topk", "topk": 2}, batch_size=2) as second:
        both = second.draw_batch([image, image[:, ::-1].copy()], names=["a", "b"])
        alone = second.draw(image[:, ::-1].copy(), name="b")
    assert list(one)[-1] == "featmap/backbone.layer2" and one.name == "a"
    assert [p.name for p in both] == ["a", "b"]
    assert both[0].captions["featmap/backbone.layer2"].count("range [") == 2  # topk=2: two maps, two scales
    assert set(both[1].stats) == {"backbone.layer2", "decode_head.conv_seg"}
    for key in alone:  # batched convolutions may differ in the last bits (README): a colour step here and there
        diff = np.abs(alone[key].astype(int) - both[1][key].astype(int))
        assert diff.max() <= 4 and (diff > 1).mean() < 1e-3, key
    assert _hooks(model) == 0


def test_pictures_go_to_an_mmengine_visualizer_the_caller_has(model, tmp_path):
    vis = Visualizer(name="featvis_test_vis", vis_backends=[dict(type="LocalVisBackend")], save_dir=str(tmp_path))
    with featvis.Session(model, layers=["decode_head.conv_seg"], visualizer=vis) as session:
        for step in (10, 20):
            pictures = session.draw(str(SCENE), str(MASK), step=step)
    images = tmp_path / "vis_data" / "vis_image" / "featvis" / "scene_000"
    for step in (10, 20):
        saved = _rgb(images / "featmap" / f"decode_head.conv_seg_{step}.png")
        assert np.array_equal(saved, pictures["featmap/decode_head.conv_seg"])
        assert (images / f"ground_truth_{step}.png").is_file()
    scalars = [json.loads(line) for line in (tmp_path / "vis_data" / "scalars.json").read_text().splitlines()]
    assert {"featvis/stats/decode_head.conv_seg/mean", "step"} <= set(scalars[0]) and scalars[-1]["step"] == 20


def test_featvis_backends_write_the_pictures_returned(model, tmp_path):
    with featvis.Session(model, layers=["decode_head.bottleneck"], backends=["local"], save_dir=tmp_path) as session:
        pictures = session.draw(str(SCENE))
    folder = tmp_path / "local" / "scene_000"
    assert np.array_equal(_rgb(folder / "featmap" / "decode_head.bottleneck.png"),
                          pictures["featmap/decode_head.bottleneck"])
    assert np.array_equal(_rgb(folder / "input.png"), pictures["input"])


def test_a_config_and_checkpoint_instead_of_a_model_and_a_shared_pca_basis_over_a_batch(tmp_path):
    image = cv2.imread(str(SCENE))
    with featvis.Session(str(CONFIG), layers=["backbone.layer3"], checkpoint=str(CHECKPOINT), device="cpu",
                         reduction={"name": "pca_rgb", "shared_basis": True}, sketch_pixels=32) as session:
        a, b = session.draw_batch([image, cv2.flip(image, 1)])
    assert a.name == "image_000" and b.name == "image_001"
    assert a["featmap/backbone.layer3"].shape == image.shape and a.prediction.shape == image.shape[:2]
    assert a.sketch["backbone.layer3"].shape[0] == 32  # features at the 32 sampled pixels


@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((8, 8), np.uint8), InputError, "no colour channels"),
    (np.zeros((8, 8, 3), np.float32), InputError, "pass uint8"),
    (np.zeros((8, 8, 4), np.uint8), InputError, "H x W x 3"),
    ("/no/such/image.png", InputError, "does not exist"),
])
def test_an_image_that_cannot_be_drawn_is_one_line(model, bad, error, words):
    with featvis.Session(model, layers=["decode_head.conv_seg"]) as session:
        with pytest.raises(error, match=words) as caught:
            session.draw(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("options, words", [
    ({"layers": ["decode_head.conv_segg"]}, "closest: decode_head.conv_seg"),
    ({"reduction": "nonexistent"}, "reduction.name='nonexistent' is unknown"),
    ({"reduction": {"name": "topk", "kk": 2}}, "has no option 'kk'"),
    ({"normalize": {"mode": "global"}}, "normalize mode='global' is unknown"),
    ({"backends": ["local"]}, "backends need a save_dir"),
])
def test_a_mistake_in_the_options_is_one_line_before_any_hook(model, options, words):
    with pytest.raises((ConfigError, LayerNotFoundError), match=words) as caught:
        featvis.Session(model, **options)
    assert "\n" not in str(caught.value) and _hooks(model) == 0


def test_a_module_that_is_no_segmentor_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="is not an mmseg segmentor"):
        featvis.Session(torch.nn.Conv2d(3, 3, 1))
