"""The job's visualizer: every backend gets each picture, encoded as PNG only once."""

import cv2
import numpy as np

from featvis.backends import png as png_module
from featvis.backends.run_info import RunInfo
from featvis.visualizer import FeatureVisualizer
from tests.conftest import compose_cfg, history, wandb_records, wandb_runs


def test_local_and_wandb_share_one_png_encoding_per_picture(tmp_path, monkeypatch):
    calls = []
    real = png_module.cv2.imencode
    monkeypatch.setattr(png_module.cv2, "imencode", lambda *a, **k: calls.append(1) or real(*a, **k))
    backends = {k: dict(v) for k, v in compose_cfg("backends=[local,wandb]").backends.items()}
    pictures = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(3)]
    vis = FeatureVisualizer(backends, tmp_path, RunInfo(name="t", job_type="t", group=None))
    with vis:
        vis.start()
        for i, picture in enumerate(pictures):
            vis.add_image("input", picture, step=i, image_id=f"img{i}", caption=f"img{i}")
    assert len(calls) == 3  # not 6
    for i, picture in enumerate(pictures):  # what the local backend wrote is the picture, RGB as given
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "local" / f"img{i}" / "input.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(written, picture)
    (run,) = wandb_runs(tmp_path)
    rows = history(wandb_records(run))  # one row per step, its picture logged from the shared encoding
    assert [r["input._type"] for r in rows] == ["image-file"] * 3


def test_a_job_encodes_each_of_its_pictures_once(tmp_path, monkeypatch):
    from featvis import pipeline
    from featvis.job import JobInfo
    from featvis.paths import ASSETS

    calls = []
    real = png_module.cv2.imencode
    monkeypatch.setattr(png_module.cv2, "imencode", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = compose_cfg("backends=[local,wandb]", "layers=dense", f"image={ASSETS / 'demo/images/scene_000.png'}")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path))
    written = sorted((result.output_dir / "local").rglob("*.png"))
    assert len(written) == len(result.panels["scene_000"]) > 30 and len(calls) == len(written)
    (run,) = wandb_runs(result.output_dir)
    (row,) = history(wandb_records(run))
    assert sum(k.endswith("._type") and row[k] == "image-file" for k in row) == len(written)
