from pathlib import Path

import cv2
import numpy as np
import pytest

from featvis.data.images import Sample, _dataset_labels, choose, collect, iter_loaded, load
from featvis.errors import InputError


def _png(path: Path, h: int = 6, w: int = 8, channels: int = 3, value: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, channels) if channels > 1 else (h, w)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def test_folder_glob_and_file_forms(tmp_path):
    for stem in ("b", "a"):
        _png(tmp_path / "img" / f"{stem}.png")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    assert [s.stem for s in collect(str(tmp_path / "img"), None).samples] == ["a", "b"]
    assert [s.stem for s in collect(str(tmp_path / "img" / "*.png"), None).samples] == ["a", "b"]
    assert [s.stem for s in collect(str(tmp_path / "img" / "b.png"), None).samples] == ["b"]


def test_masks_matched_by_stem_and_loaded(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    _png(tmp_path / "gt" / "a.png", channels=1, value=3)
    samples = collect(str(tmp_path / "img"), str(tmp_path / "gt")).samples
    assert [s.mask_path is not None for s in samples] == [True, False]
    loaded = load(samples[0])
    assert loaded.gt.shape == (6, 8) and (loaded.gt == 3).all()
    assert loaded.image_rgb.shape == (6, 8, 3)


def test_image_is_rgb_and_model_input_bgr(tmp_path):
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    loaded = load(collect(str(tmp_path / "red.png"), None).samples[0])
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
        collect(str(tmp_path / "broken.png"), None).usable()


def test_mask_size_mismatch(tmp_path):
    _png(tmp_path / "img" / "a.png", h=6, w=8)
    _png(tmp_path / "gt" / "a.png", h=6, w=9, channels=1)
    with pytest.raises(InputError, match=r"9x6 but image .* is 8x6"):
        collect(str(tmp_path / "img"), str(tmp_path / "gt")).usable()


def test_colour_mask_rejected(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "gt" / "a.png", channels=3)
    with pytest.raises(InputError, match="single-channel"):
        collect(str(tmp_path / "img"), str(tmp_path / "gt")).usable()


def test_duplicate_image_stems_get_unique_names(tmp_path):
    _png(tmp_path / "x" / "a.png")
    _png(tmp_path / "y" / "a.png")
    assert [s.stem for s in collect(str(tmp_path / "*" / "a.png"), None).samples] == ["a", "a_2"]


def test_one_bad_image_among_good_ones_is_set_aside(tmp_path):
    _png(tmp_path / "img" / "a.png")
    (tmp_path / "img" / "b.png").write_bytes(b"broken")
    _png(tmp_path / "img" / "c.png", h=6, w=8)
    _png(tmp_path / "gt" / "c.png", h=5, w=8, channels=1)
    collected = collect(str(tmp_path / "img"), str(tmp_path / "gt"))
    assert [s.stem for s in collected.usable()] == ["a"]
    assert [(p.path.name, "readable" in p.message or "size" in p.message) for p in collected.problems] == [
        ("b.png", True), ("c.png", True)]


def test_image_that_fails_to_decode_is_skipped_and_reported(tmp_path):
    good = _png(tmp_path / "a.png")
    bad = tmp_path / "b.png"
    bad.write_bytes(good.read_bytes()[:60])  # a valid header, truncated pixels
    samples = collect(str(tmp_path), None).samples
    problems = []
    assert [item.sample.stem for item in iter_loaded(samples, problems)] == ["a"]
    assert [p.path.name for p in problems] == ["b.png"]


def test_choose_first_or_seeded_random_in_file_order():
    samples = [Sample(str(i), Path(f"{i}.png"), None, (1, 1)) for i in range(10)]
    assert [s.stem for s in choose(samples, 3, "first", 0)] == ["0", "1", "2"]
    picked = [s.stem for s in choose(samples, 3, "random", 7)]
    assert picked == [s.stem for s in choose(samples, 3, "random", 7)] and picked == sorted(picked, key=int)
    assert picked != ["0", "1", "2"] or [s.stem for s in choose(samples, 3, "random", 8)] != picked
    assert choose(samples, None, "first", 0) == samples


def test_dataset_masks_follow_mmseg_reduce_zero_label():
    sample = Sample("x", Path("x.png"), None, (1, 4), reduce_zero_label=True)
    assert _dataset_labels(np.array([[0, 1, 5, 255]], np.uint8), sample).tolist() == [[255, 0, 4, 255]]
    mapped = Sample("x", Path("x.png"), None, (1, 3), label_map={1: 2, 2: 1})
    assert _dataset_labels(np.array([[0, 1, 2]], np.uint8), mapped).tolist() == [[0, 2, 1]]
