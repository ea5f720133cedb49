import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from featvis.data.images import Sample, _dataset_labels, choose, collect, iter_loaded, load
from featvis.errors import InputError
from tests.helpers import png_header_claiming


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
    # a name follows from the list alone: an unreadable first `a.png` keeps its name, the next is still a_2
    (tmp_path / "x" / "a.png").write_bytes(b"broken")
    collected = collect(str(tmp_path / "*" / "a.png"), None)
    assert [s.stem for s in collected.samples] == ["a_2"] and len(collected.problems) == 1


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


def test_png_claiming_60000x60000_is_a_problem_not_pils_error(tmp_path):
    _png(tmp_path / "a.png")
    bomb = png_header_claiming(tmp_path / "bomb.png", 60000, 60000)
    assert bomb.stat().st_size < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail the test
        collected = collect(str(tmp_path), None)
    assert [s.stem for s in collected.samples] == ["a"]
    (problem,) = collected.problems
    assert problem.path == bomb
    assert "60000x60000 (3,600,000,000 pixels), over max_image_pixels=89,478,485" in problem.message
    with pytest.raises(InputError, match="over max_image_pixels"):  # alone: the job's one-line error
        collect(str(bomb), None).usable()


def test_pixel_limit_is_checked_on_the_header_for_images_and_masks(tmp_path, monkeypatch):
    _png(tmp_path / "img" / "a.png", h=6, w=8)
    _png(tmp_path / "img" / "b.png", h=4, w=4)
    _png(tmp_path / "gt" / "b.png", h=4, w=4, channels=1)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.filename))
    collected = collect(str(tmp_path / "img"), str(tmp_path / "gt"), max_pixels=47)
    assert [s.stem for s in collected.samples] == ["b"]
    assert [(p.path.name, "8x6 (48 pixels), over max_image_pixels=47" in p.message) for p in collected.problems] == [
        ("a.png", True)]
    assert decoded == []  # headers only: not one pixel decoded
    _png(tmp_path / "gt" / "b.png", h=6, w=8, channels=1)  # a mask over the limit: refused for that, not its size
    (problem,) = collect(str(tmp_path / "img" / "b.png"), str(tmp_path / "gt"), max_pixels=20).problems
    mask = tmp_path / "gt" / "b.png"
    assert problem.message.startswith(f"gt_mask {mask} is 8x6 (48 pixels), over max_image_pixels=20")


def test_mask_over_the_limit_is_refused_before_its_image_size_is_compared(tmp_path):
    _png(tmp_path / "img" / "a.png", h=4, w=4)
    (tmp_path / "gt").mkdir()
    png_header_claiming(tmp_path / "gt" / "a.png", 60000, 60000)
    (problem,) = collect(str(tmp_path / "img"), str(tmp_path / "gt")).problems
    assert problem.message.startswith(f"gt_mask {tmp_path / 'gt' / 'a.png'} is 60000x60000")


def _exif_jpeg(path: Path, rgb: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
    return path


def _marked(h: int = 40, w: int = 64) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:10, :20] = 255  # a white block at the stored top left
    rgb[30:, 50:, 2] = 255  # a blue one at the stored bottom right
    return rgb


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_decoded_as_pil_and_opencv_show_it(tmp_path, orientation):
    path = _exif_jpeg(tmp_path / "photo.jpg", _marked(), orientation)
    sample = collect(str(path), None).samples[0]
    loaded = load(sample)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert sample.size == shown.shape[:2] == loaded.image_rgb.shape[:2]
    assert np.array_equal(loaded.image_rgb, shown)
    opencv = cv2.imread(str(path), cv2.IMREAD_COLOR)  # OpenCV's own EXIF handling agrees
    assert np.array_equal(loaded.image_bgr, opencv)


def test_exif_rotated_jpeg_with_its_rotated_mask(tmp_path):
    """A phone photo stored 40x64 with orientation 6 (shown 64 high, 40 wide) and a mask drawn on what is shown."""
    (tmp_path / "img").mkdir()
    image = _exif_jpeg(tmp_path / "img" / "photo.jpg", _marked(), 6)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(image)).convert("RGB"))
    mask = (shown[..., 0] > 128).astype(np.uint8)  # class 1 where the white block is shown
    (tmp_path / "gt").mkdir()
    Image.fromarray(mask).save(tmp_path / "gt" / "photo.png")
    collected = collect(str(tmp_path / "img"), str(tmp_path / "gt"))
    assert collected.problems == []
    loaded = load(collected.samples[0])
    assert loaded.gt.shape == loaded.image_rgb.shape[:2] == (64, 40)
    assert np.array_equal(loaded.gt, mask)
    assert (loaded.image_rgb[loaded.gt == 1] > 128).all()  # the mask lies on the block it was drawn on


def test_mask_of_the_stored_orientation_is_refused_with_the_reason(tmp_path):
    (tmp_path / "img").mkdir()
    _exif_jpeg(tmp_path / "img" / "photo.jpg", _marked(), 6)
    _png(tmp_path / "gt" / "photo.png", h=40, w=64, channels=1)  # the size as stored, not as shown
    (problem,) = collect(str(tmp_path / "img"), str(tmp_path / "gt")).problems
    assert "is 64x40 but image" in problem.message and "is 40x64 as shown (its EXIF orientation 6" in problem.message


def test_fifo_and_symlink_loops_in_a_folder_are_skipped_with_one_warning(tmp_path, capsys):
    folder = tmp_path / "img"
    _png(folder / "a.png")
    os.mkfifo(folder / "fifo.png")  # opening it would block the job forever
    (folder / "loop1.png").symlink_to(folder / "loop2.png")
    (folder / "loop2.png").symlink_to(folder / "loop1.png")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "notes").symlink_to(folder / "notes")  # not an image's name: not read, not said
    collected = collect(str(folder), None)  # returns at all: the FIFO was never opened
    assert [s.stem for s in collected.samples] == ["a"] and collected.problems == []
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featvis: warning: ")]
    assert len(lines) == 1, lines
    assert "4 entries skipped, not readable files" in lines[0]
    assert "dangling.jpg (a broken symbolic link)" in lines[0] and "fifo.png (a FIFO)" in lines[0]
    assert "loop1.png (a symbolic link loop)" in lines[0]


def test_a_fifo_named_alone_or_by_a_mask_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(InputError, match=r"fifo.png' is a FIFO, not an image file"):
        collect(str(tmp_path / "fifo.png"), None)
    _png(tmp_path / "img" / "fifo.png")
    (tmp_path / "gt").mkdir()
    os.mkfifo(tmp_path / "gt" / "fifo.png")
    os.symlink(tmp_path / "gt" / "fifo.png", tmp_path / "gt" / "link.png")
    with pytest.raises(InputError, match="is a FIFO, not an image file"):  # the mask's header is never opened
        collect(str(tmp_path / "img"), str(tmp_path / "gt" / "fifo.png")).usable()


def test_pils_own_limit_never_escapes_when_max_image_pixels_is_higher(tmp_path, monkeypatch):
    """PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice it: featvis's limit replaces both."""
    _png(tmp_path / "img" / "a.png", h=6, w=8)
    _png(tmp_path / "gt" / "a.png", h=6, w=8, channels=1, value=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # 48 pixels: PIL's DecompressionBombError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collected = collect(str(tmp_path / "img"), str(tmp_path / "gt"), max_pixels=48)
        loaded = load(collected.usable()[0])
    assert loaded.gt.shape == (6, 8) and (loaded.gt == 2).all()
    assert Image.MAX_IMAGE_PIXELS == 20  # PIL's own limit is as it was
