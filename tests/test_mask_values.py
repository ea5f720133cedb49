"""Ground-truth values that are not classes of the model (issue 11, case 9): reported per image,
drawn as unlabelled, never in some class's colour."""

import json

import cv2
import numpy as np

from featvis.config.job import JobInfo
from featvis.data.masks import stray_labels
from featvis.pipeline import job as pipeline
from featvis.sweep.results import RESULT_FILE, write_job_result
from tests.helpers import DEMO_IMAGE, job_config, run_cli


def _mask_with_stray_values(folder):
    """A 16-bit mask for the demo scene (192x256): class 1, then 200 and 1000 (not classes), 255 (ignore)."""
    gt = np.zeros((192, 256), np.uint16)
    gt[:, 64:128] = 1
    gt[:96, 128:192] = 200
    gt[96:, 128:192] = 1000
    gt[:, 192:] = 255
    folder.mkdir()
    cv2.imwrite(str(folder / f"{DEMO_IMAGE.stem}.png"), gt)
    return folder / f"{DEMO_IMAGE.stem}.png"


def test_stray_values_are_found_and_ignore_is_not_one():
    gt = np.array([[0, 3, 4], [255, 200, 1000]], np.int32)
    found = stray_labels(gt, classes=4)
    assert found.values == [4, 200, 1000] and found.pixels == 3
    assert "mask values 4, 200, 1000 are not classes of the model (0..3" in found.note
    assert stray_labels(np.array([[0, 3, 255]], np.uint8), classes=4) is None


def test_stray_mask_values_are_reported_and_drawn_unlabelled(tmp_path):
    mask = _mask_with_stray_values(tmp_path / "masks")
    out = tmp_path / "X"
    proc = run_cli(f"image={DEMO_IMAGE}", f"gt_mask={mask.parent}", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    assert "mask values 200, 1000 are not classes of the model (0..3; 255 = ignore)" in proc.stdout
    lines = (out / "featvis" / "labels.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{mask}\t") and "200, 1000" in lines[0]
    assert f"{192 * 64} pixel(s)" in lines[0]
    folder = out / "featvis" / "local" / DEMO_IMAGE.stem
    drawn, image = cv2.imread(str(folder / "ground_truth.png")), cv2.imread(str(folder / "input.png"))
    assert np.array_equal(drawn[:, 128:], image[:, 128:])  # 200, 1000 and 255: the plain image
    coloured = np.abs(drawn[:, 64:128].astype(int) - image[:, 64:128]).sum(axis=2) > 0
    assert coloured.mean() > 0.9  # class 1: blended with its palette colour


def test_stray_values_go_into_a_sweep_jobs_result_file(tmp_path):
    mask = _mask_with_stray_values(tmp_path / "masks")
    cfg = job_config(f"image={DEMO_IMAGE}", f"gt_mask={mask.parent}", "backends=[local]")
    info = JobInfo(output_dir=tmp_path / "0", sweep_dir=tmp_path)
    result = pipeline.run(cfg, info)
    assert list(result.labels) == [DEMO_IMAGE.stem]
    written = json.loads(write_job_result(cfg, info, result, None, None).read_text())
    assert "200, 1000" in written["labels"][DEMO_IMAGE.stem]
    assert (tmp_path / "0" / RESULT_FILE).is_file()
