"""`mode=list`: every module with its type, real output shapes and presets; filters; no hooks left."""

import fnmatch
import re

import cv2
import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from featvis.config.schema import validate
from featvis.data.paths import ASSETS
from featvis.errors import ConfigError, LayerNotFoundError
from featvis.model.load import load_model
from featvis.pipeline.listing import OutputShapes, format_output, list_modules
from featvis.record.layers import select_layers
from tests.helpers import compose_cfg, job_config, run_cli, wandb_runs
from tests.helpers import listing_table as table

FIRST_IMAGE = sorted((ASSETS / "demo" / "images").glob("*.png"))[0]  # what the default `image` lists with
SHAPE = re.compile(r"\d+x\d+")


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def demo():
    cfg = job_config("mode=list")
    return load_model(cfg.model.config, cfg.model.checkpoint, "cpu")


@pytest.fixture(scope="module")
def demo_listing(demo) -> str:
    return list_modules(job_config("mode=list"), demo)


def test_decoder_layers_with_the_shapes_the_model_really_produced(demo, demo_listing):
    from mmseg.apis import inference_model

    seen = []
    handle = demo.model.decode_head.conv_seg.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    try:
        sample = inference_model(demo.model, cv2.imread(str(FIRST_IMAGE)))
    finally:
        handle.remove()
    (shape,) = seen
    n, classes, h, w = shape
    assert (n, classes) == (1, 4)
    rows = table(demo_listing)
    assert rows["decode_head.conv_seg"][:2] == ["Conv2d", f"1x4x{h}x{w}"]
    assert rows["decode_head.conv_seg"][2] == "decoder/input, decoder, dense"  # what enters it, and its logits
    assert rows["decode_head.bottleneck"][0] == "ConvModule" and rows["decode_head.bottleneck"][2] == "decoder"
    assert rows["decode_head.psp_modules"][1].startswith("(") and rows["decode_head.psp_modules"][1].count("x") == 12
    assert rows["backbone"][2] == "backbone" and rows["backbone.layer4"][2] == ""  # the stages it returns
    # mmseg never runs the auxiliary head at inference; featvis runs it to draw it, and lists what it gives
    assert rows["auxiliary_head.conv_seg"][1:] == [f"1x4x{h}x{w}", "auxiliary/input, auxiliary, dense"]
    assert rows["backbone.layer1.0.relu"][1].endswith(" x2")  # a block's ReLU runs twice
    fed = "x".join(map(str, sample.metainfo["img_shape"]))
    header = demo_listing.split("\n\n")[0]
    assert "model demo" in header and FIRST_IMAGE.name in header and f"fed to the model as {fed}" in header
    assert "116 of 116 modules listed" in demo_listing.split("\n\n")[2]


def test_every_module_is_listed_in_order_indented_by_depth(demo, demo_listing):
    names = [n for n, _ in demo.model.named_modules() if n]
    assert list(table(demo_listing)) == names
    body = demo_listing.split("\n\n")[1].splitlines()
    line = next(line for line in body if line.strip().startswith("decode_head.psp_modules.0.1.conv "))
    assert line.startswith(" " * 8 + "decode_head")  # depth 5: 2 spaces for each of 4 levels below the top


def test_filter_restricts_rows(demo):
    text = list_modules(job_config("mode=list", "listing.filter=decode_head.*"), demo)
    rows = table(text)
    expected = [n for n, _ in demo.model.named_modules() if fnmatch.fnmatchcase(n, "decode_head.*")]
    assert list(rows) == expected and "decode_head.conv_seg" in rows
    assert not any(n.startswith("backbone") for n in rows)
    assert text.split("\n\n")[1].splitlines()[1].startswith("decode_head.")  # indents start at the top row
    assert "listing.filter='decode_head.*'" in text.split("\n\n")[2]


def test_max_depth(demo):
    rows = table(list_modules(job_config("mode=list", "listing.max_depth=1"), demo))
    assert list(rows) == [n for n, _ in demo.model.named_children()]
    rows = table(list_modules(job_config("mode=list", "listing.filter=decode_head*", "listing.max_depth=2"), demo))
    assert "decode_head" in rows and "decode_head.conv_seg" in rows
    assert max(n.count(".") for n in rows) == 1


@pytest.mark.parametrize("overrides, words", [
    (["listing.filter=decode_haed.*"], ["'decode_haed.*' matches no module", "closest: decode_head"]),
    (["listing.filter=*conv*", "listing.max_depth=1"], ["none within listing.max_depth=1"]),
])
def test_filter_matching_nothing_fails_in_one_line(demo, overrides, words):
    with pytest.raises(LayerNotFoundError) as err:
        list_modules(job_config("mode=list", *overrides), demo)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_a_preset_that_does_not_resolve_is_reported_not_fatal(demo):
    text = list_modules(job_config("mode=list", "+model.layer_presets.bogus=[nope.*]",
                                    "listing.filter=decode_head.conv_seg"), demo)
    assert table(text)["decode_head.conv_seg"][2] == "decoder/input, decoder, dense"
    assert "preset 'bogus' does not resolve on this model: pattern 'nope.*' matches no module" in text


def test_no_hooks_left_on_the_model(demo):
    before = hook_count(demo.model)
    list_modules(job_config("mode=list", "listing.filter=decode_head.*"), demo)
    assert hook_count(demo.model) == before


def test_no_hooks_left_when_the_forward_fails(demo, monkeypatch):
    from featvis.pipeline import listing

    before = hook_count(demo.model)

    def failing(model, image):
        assert hook_count(model) > before  # the listing's hooks are on
        raise RuntimeError("boom")

    monkeypatch.setattr(listing, "inference_model", failing)  # mmseg's, as the listing calls it
    with pytest.raises(RuntimeError, match="boom"):
        list_modules(job_config("mode=list"), demo)
    assert hook_count(demo.model) == before


def test_loads_the_model_itself_when_none_is_given():
    rows = table(list_modules(job_config("mode=list", "listing.filter=*conv_seg")))
    assert set(rows) == {"decode_head.conv_seg", "auxiliary_head.conv_seg"}


def test_output_formats():
    t = torch.zeros
    assert format_output(t(1, 64, 128, 256)) == "1x64x128x256"
    assert format_output((t(1, 2), [t(3), None])) == "(1x2, (3, None))"
    assert format_output({"a": t(2, 2), "b": 3}) == "{a: 2x2, b: int}"
    assert format_output(torch.tensor(1.0)) == "scalar"
    assert format_output(list(range(20))).endswith("... 20 in all)")


def test_counts_calls_and_marks_modules_that_never_ran():
    relu, unused = nn.ReLU(), nn.Conv2d(1, 1, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu, self.unused, self.conv = relu, unused, nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.relu(self.conv(self.relu(self.relu(x))))

    net = Net()
    with OutputShapes(net) as shapes:
        net(torch.zeros(1, 1, 4, 5))
    assert shapes.text("relu") == "1x1x4x5 x2; 1x2x4x5"
    assert shapes.text("conv") == "1x2x4x5" and shapes.text("unused") == "-"
    assert hook_count(net) == 0


@pytest.mark.parametrize("override, message", [("listing.max_depth=0", "listing.max_depth=0 must be at least 1")])
def test_bad_listing_values_rejected(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_cfg(override))


def test_unknown_mode_rejected_while_composing():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("mode=lst")
    assert "expected one of [run, list]" in str(err.value.__cause__)


def test_cli_lists_without_writing_results_or_opening_wandb(tmp_path):
    proc = run_cli("mode=list", "listing.filter=decode_head.*", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert "decode_head.conv_seg" in proc.stdout and "backbone.layer1" not in proc.stdout
    assert not (tmp_path / "featvis").exists() and not (tmp_path / "featvis.partial").exists()
    assert wandb_runs(tmp_path) == [] and not list(tmp_path.rglob("*wandb*"))


def test_cli_filter_matching_nothing_is_one_line(tmp_path):
    proc = run_cli("mode=list", "listing.filter=decode_haed.*", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featvis: error: listing.filter='decode_haed.*'"), proc.stderr
    assert "closest: decode_head" in lines[0] and "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ann", "pspnet", "deeplabv3", "segformer"])
def test_public_models_list_shapes_for_every_preset_layer(model):
    cfg = job_config("mode=list", f"model={model}", "model.checkpoint=null")
    loaded = load_model(cfg.model.config, None, "cpu")
    rows = table(list_modules(cfg, loaded))
    assert len(rows) == sum(1 for n, _ in loaded.model.named_modules() if n)
    for preset, specs in cfg.model.layer_presets.items():
        for sel in select_layers(loaded.model, list(specs)):
            _, output, presets = rows[sel.module_name]
            assert preset in presets.split(", "), (preset, sel.module_name)
            if sel.module_name.startswith("auxiliary_head."):
                assert output == "-", sel.module_name  # training-time head: never runs at inference
            else:
                assert SHAPE.search(output), (preset, sel.module_name, output)
