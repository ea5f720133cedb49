"""Checked before anything is written (issue 11, cases 5 and 13): a bad value, a single image that
cannot be decoded, a reduction that does not fit a layer fail with one line, exit 1, and no
`featvis.partial/` (so no W&B run either)."""

import pytest

from tests.helpers import DEMO_IMAGE, error_line, run_cli


def _fails_before_writing(proc, out, *words: str) -> None:
    lines = [error_line(proc)]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (out / "featvis.partial").exists() and not (out / "featvis").exists()


@pytest.mark.parametrize("overrides, value", [(["max_images=-1"], "-1"), (["max_images=0"], "0"),
                                              (["max_images=-1", "sample=random"], "-1")])
def test_max_images_below_one_is_refused(tmp_path, overrides, value):
    out = tmp_path / "X"
    proc = run_cli(*overrides, f"hydra.run.dir={out}")
    _fails_before_writing(proc, out, f"max_images={value} must be at least 1", "null")


def test_a_single_truncated_image_fails_before_any_output(tmp_path):
    data = DEMO_IMAGE.read_bytes()
    image = tmp_path / "cut.png"
    image.write_bytes(data[: len(data) // 2])  # the header reads; the pixels do not decode
    out = tmp_path / "X"
    proc = run_cli(f"image={image}", "gt_mask=null", f"hydra.run.dir={out}")
    _fails_before_writing(proc, out, "cut.png", "cannot be decoded")


def test_class_map_on_a_layer_it_does_not_fit_fails_before_any_output(tmp_path):
    out = tmp_path / "X"
    proc = run_cli("reduction=class_map", "reduction.target_class=circle", "layers.names=[decode_head.conv_seg]",
                   f"image={DEMO_IMAGE}", f"hydra.run.dir={out}")
    _fails_before_writing(proc, out, "class_map applies to layers", "decode_head.bottleneck")
