"""The fast drawing path draws exactly what the plain one did: same pixels, every case.

The reference below is featvis's drawing code before it was made faster (masked copies
for the finite range, `nan_to_num` always, numpy's fancy-index colour look-up, the scale bar
added by copying the picture into a taller one). Any change to the pictures fails here.
"""

import numpy as np
import pytest
import torch

from featvis.backends.encoding import PNG, Encoded
from featvis.render.colormaps import DIVERGING, JET, lut
from featvis.render.heatmap import colorize, normalize, overlay_maps
from featvis.render.scales import Scale, ScaleRule, finite_min_max, is_constant, make_scale
from tests.render_reference import _ref_is_constant, _ref_min_max, _ref_normalize, _ref_overlay


def _maps(kind, rng):
    m = rng.standard_normal((30, 40)).astype(np.float32)
    if kind == "nan":
        m[1, 1], m[2, 2], m[3, 3] = np.nan, np.inf, -np.inf
    elif kind == "constant":
        m[:] = 3.0
    elif kind == "nearly_constant":
        m = 5.0 + m * 1e-7
    elif kind == "positive":
        m = np.abs(m) * 1e3
    elif kind == "all_nan":
        m[:] = np.nan
    elif kind == "huge":
        m = m * 1e30
    return torch.from_numpy(m.astype(np.float32))


KINDS = ["plain", "nan", "constant", "nearly_constant", "positive", "all_nan", "huge"]
SCALES = {"per_map_default": None, "per_map": ScaleRule(), "percentile": ScaleRule(mode="percentile"),
          "fixed_diverging": make_scale(-0.5, 0.7), "fixed_jet": make_scale(0.1, 0.9, JET),
          "explicit_diverging": ScaleRule(colormap=DIVERGING)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale_name", sorted(SCALES))
@pytest.mark.parametrize("bar", [False, True])
def test_overlays_are_pixel_identical_to_the_reference(kind, scale_name, bar):
    rng = np.random.default_rng(KINDS.index(kind))
    image = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    meta = {"img_shape": (90, 120), "batch_input_shape": (96, 128)}  # padding cropped, then resized
    m = _maps(kind, rng)
    scale = SCALES[scale_name]
    got = overlay_maps(m[None], image, meta, 0.4, scale=scale, scale_bar=bar).picture
    want = _ref_overlay(m, image, meta, 0.4, scale, bar)
    assert got.shape == want.shape and np.array_equal(got, want)
    # and what the local backend stores decodes to exactly that picture
    import cv2

    decoded = cv2.imdecode(np.frombuffer(Encoded(got).data(PNG), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.uint8])
def test_range_and_normalize_match_the_reference_for_every_dtype(dtype):
    rng = np.random.default_rng(1)
    for trial in range(20):
        values = (rng.standard_normal((17, 23)) * 10 ** rng.uniform(-3, 3)).astype(dtype)
        if trial % 3 == 0 and values.dtype.kind == "f":
            values.flat[rng.integers(0, values.size, 5)] = [np.nan, np.inf, -np.inf, np.nan, 1.0]
        assert finite_min_max(values) == _ref_min_max(values)
        assert is_constant(values) == _ref_is_constant(values)
        for scale in (make_scale(-1.0, 2.0), make_scale(0.0, 1.0, JET), Scale(1.0, 1.0, False, JET)):
            assert np.array_equal(normalize(values, scale), _ref_normalize(values, scale))
            assert np.array_equal(colorize(values, scale), lut(scale.colormap)[_ref_normalize(values, scale)])


def test_normalize_leaves_its_input_alone():
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    before = values.copy()
    normalize(values, make_scale(-1, 1))
    assert np.array_equal(values, before)


def test_label_overlays_match_the_palette_lookup():
    from featvis.render.labels import IGNORE_INDEX, colorize_labels, overlay_labels

    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (19, 3)).tolist()
    labels = rng.integers(0, 21, (37, 53))
    labels[:4] = IGNORE_INDEX
    table = np.zeros((256, 3), np.uint8)
    table[:19] = palette
    assert np.array_equal(colorize_labels(labels, palette), table[labels.astype(np.uint8)])
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    import cv2

    want = cv2.addWeighted(image, 0.5, table[labels.astype(np.uint8)], 0.5, 0.0)
    want[labels == IGNORE_INDEX] = image[labels == IGNORE_INDEX]
    assert np.array_equal(overlay_labels(labels, image, palette, 0.5), want)
