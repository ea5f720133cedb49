"""Image files as a user's folder holds them (issue 11, cases 8 and 12): names that are no
folder names, hidden files (macOS's `._x.png`), subfolders."""

import logging
from pathlib import Path

import cv2
import numpy as np

from featvis.data.images import collect
from featvis.data.names import Names, safe_stem
from tests.helpers import DEMO_IMAGE, run_cli


def _png(path: Path, value: int = 7, shape=(6, 8, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def test_stems_that_are_no_folder_names_are_made_safe_and_unique():
    assert [safe_stem(s) for s in ("..", ".", "a\\b", ".x", " ", "scène 1")] == ["image", "image", "a_b", "x",
                                                                              "image", "scène 1"]
    names = Names()
    assert [names.claim(s) for s in ("a", "a_2", "a", "A", "..", ".")] == ["a", "a_2", "a_3", "A_4", "image",
                                                                          "image_2"]


def test_dot_dot_stems_write_inside_their_own_folders(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "...png").write_bytes(DEMO_IMAGE.read_bytes())  # stem ".."
    (images / "..png").write_bytes(DEMO_IMAGE.read_bytes())  # stem "."
    out = tmp_path / "X"
    proc = run_cli(f"image={images}/.*png", "gt_mask=null", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    results = out / "featvis"
    assert sorted(p.name for p in results.iterdir()) == ["local"]  # nothing written beside local/
    assert sorted(p.name for p in (results / "local").iterdir() if p.is_dir()) == ["image", "image_2"]
    assert not list((results / "local").glob("*.png"))
    for name in ("image", "image_2"):
        assert (results / "local" / name / "input.png").is_file()
        assert (results / "local" / name / "featmap" / "decode_head.conv_seg.png").is_file()


def test_hidden_files_are_skipped_and_subfolders_named(tmp_path, caplog):
    folder = tmp_path / "images"
    _png(folder / "scene.png")
    (folder / "._scene.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    _png(folder / ".hidden.png")
    _png(folder / "sub" / "deeper.png")
    _png(tmp_path / "masks" / "scene.png", value=1, shape=(6, 8))
    (tmp_path / "masks" / "._scene.png").write_bytes(b"AppleDouble")
    with caplog.at_level(logging.INFO, logger="featvis.data.images"):
        collected = collect(str(folder), str(tmp_path / "masks"))
    assert [s.stem for s in collected.samples] == ["scene"] and not collected.problems
    assert collected.samples[0].mask_path == tmp_path / "masks" / "scene.png"
    text = caplog.text
    assert "2 hidden file(s) skipped (._scene.png, .hidden.png)" in text
    assert "1 subfolder(s) not read (sub)" in text and f"image='{folder}/**/*.png'" in text
    recursive = collect(f"{folder}/**/*.png", None)  # what the log line proposes
    assert sorted(s.stem for s in recursive.samples) == ["deeper", "scene"]  # .hidden.png: not matched by *
