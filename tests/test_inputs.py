from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.errors import InputError
from featvis.inputs import collect, load


def _png(path: Path, h: int = 6, w: int = 8, channels: int = 3, value: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, channels) if channels > 1 else (h, w)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def test_folder_glob_and_file_forms(tmp_path):
    for stem in ("b", "a"):
        _png(tmp_path / "img" / f"{stem}.png")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    assert [s.stem for s in collect(str(tmp_path / "img"), None)] == ["a", "b"]
    assert [s.stem for s in collect(str(tmp_path / "img" / "*.png"), None)] == ["a", "b"]
    assert [s.stem for s in collect(str(tmp_path / "img" / "b.png"), None)] == ["b"]


def test_masks_matched_by_stem_and_loaded(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    _png(tmp_path / "gt" / "a.png", channels=1, value=3)
    samples = collect(str(tmp_path / "img"), str(tmp_path / "gt"))
    assert [s.mask_path is not None for s in samples] == [True, False]
    loaded = load(samples[0])
    assert loaded.gt.shape == (6, 8) and (loaded.gt == 3).all()
    assert loaded.image_rgb.shape == (6, 8, 3)


def test_image_is_rgb_and_model_input_bgr(tmp_path):
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    loaded = load(collect(str(tmp_path / "red.png"), None)[0])
    assert loaded.image_rgb[0, 0].tolist() == [255, 0, 0]
    assert loaded.image_bgr[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("spec, message", [
    ("missing.png", "does not exist"),
    ("nothing/*.png", "matches no file"),
])
def test_missing_inputs(tmp_path, spec, message):
    with pytest.raises(InputError, match=message):
        collect(str(tmp_path / spec), None)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        collect(str(tmp_path / "empty"), None)


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="not a readable image"):
        collect(str(tmp_path / "broken.png"), None)


def test_mask_size_mismatch(tmp_path):
    _png(tmp_path / "img" / "a.png", h=6, w=8)
    _png(tmp_path / "gt" / "a.png", h=6, w=9, channels=1)
    with pytest.raises(InputError, match=r"9x6 but image .* is 8x6"):
        collect(str(tmp_path / "img"), str(tmp_path / "gt"))


def test_colour_mask_rejected(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "gt" / "a.png", channels=3)
    with pytest.raises(InputError, match="single-channel"):
        collect(str(tmp_path / "img"), str(tmp_path / "gt"))


def test_duplicate_image_stems_get_unique_names(tmp_path):
    _png(tmp_path / "x" / "a.png")
    _png(tmp_path / "y" / "a.png")
    assert [s.stem for s in collect(str(tmp_path / "*" / "a.png"), None)] == ["a", "a_2"]
