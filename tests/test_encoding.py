"""Picture files per backend: lossless full-size PNG locally, smaller JPEGs for W&B, each encoded once."""

import cv2
import numpy as np
import pytest

from featvis.backends.base import RunInfo
from featvis.backends.encoding import PNG, Encoded, PictureFormat
from featvis.backends.visualizer import FeatureVisualizer
from featvis.config.schema import validate
from featvis.errors import ConfigError
from featvis.render.panel import LabelMaps, Panel
from tests.helpers import compose_cfg, error_line, history, run_cli, wandb_records, wandb_runs


def _photo(h, w, seed=0):
    """A smooth picture with some texture, like a heat map over a photo (random noise would not shrink)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_sizes_keep_the_aspect_and_only_shrink():
    fmt = PictureFormat("jpeg", 90, 1024)
    assert fmt.size(1024, 2048) == (512, 1024)
    assert fmt.size(2048, 1000) == (1024, 500)
    assert fmt.size(300, 400) == (300, 400)  # never enlarged
    assert PictureFormat("png", max_side=None).size(4000, 3000) == (4000, 3000)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_format": "gif"}, "image_format='gif' is not a picture format"),
    ({"image_format": "jpeg", "quality": 0}, "quality=0 must be between 1 and 100"),
    ({"image_format": "jpeg", "max_side": 8}, "max_side=8 must be at least 16"),
])
def test_bad_formats_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PictureFormat(**kwargs)


def test_png_is_lossless_and_quality_does_not_split_its_encoding():
    picture = _photo(64, 96)
    encoded = Encoded(picture)
    png = cv2.imdecode(np.frombuffer(encoded.data(PNG), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), picture)
    assert PictureFormat("png", 50).key == PNG.key and PictureFormat("jpeg", 50).key != PictureFormat("jpeg", 90).key
    jpeg = cv2.imdecode(np.frombuffer(encoded.data(PictureFormat("jpeg", 90)), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == picture.shape and np.abs(jpeg.astype(int) - png.astype(int)).mean() < 3  # close, not equal


def test_wandb_gets_jpegs_at_most_max_side_and_masks_of_the_same_size(tmp_path):
    backends = {k: dict(v) for k, v in compose_cfg("backends=[local,wandb]").backends.items()}
    h, w = 600, 1400
    picture = _photo(h, w)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1
    masks = LabelMaps(prediction=labels, ground_truth=labels.copy(), class_names=("a", "b"))
    vis = FeatureVisualizer(backends, tmp_path, RunInfo(name="t", job_type="t", group=None))
    with vis:
        vis.start()
        vis.add_panels([Panel("input", picture, "in", labels=masks), Panel("featmap/x", picture, "x", layer="x")],
                       step=0, image_id="img")
    local = cv2.imread(str(tmp_path / "local" / "img" / "input.png"))
    assert np.array_equal(cv2.cvtColor(local, cv2.COLOR_BGR2RGB), picture)  # local: the drawn picture, exactly
    (run,) = wandb_runs(tmp_path)
    (row,) = history(wandb_records(run))
    for key in ("input", "featmap/x"):
        path = run / "files" / row[f"{key}.path"]
        assert path.suffix == ".jpg" and row[f"{key}.format"] == "jpg"
        logged = cv2.imread(str(path))
        assert logged.shape[:2] == (round(h * 1024 / w), 1024) == (row[f"{key}.height"], row[f"{key}.width"])
        assert path.stat().st_size < 0.25 * len(Encoded(picture).data(PNG))
    for mask in ("prediction", "ground_truth"):
        logged = cv2.imread(str(run / "files" / row[f"input.masks.{mask}.path"]), cv2.IMREAD_UNCHANGED)
        assert logged.shape == (round(h * 1024 / w), 1024)
        assert set(np.unique(logged)) == {0, 1} and logged[:, :500].max() == 0 and logged[:, -500:].min() == 1


def test_full_size_png_for_wandb_is_one_switch(tmp_path):
    cfg = compose_cfg("backends=[wandb]", "wandb.image_format=png", "wandb.max_side=null")
    vis = FeatureVisualizer({k: dict(v) for k, v in cfg.backends.items()}, tmp_path, RunInfo("t", "t", None))
    picture = _photo(600, 1400)
    with vis:
        vis.start()
        vis.add_panels([Panel("input", picture, "in")], step=0, image_id="img")
    (run,) = wandb_runs(tmp_path)
    (row,) = history(wandb_records(run))
    logged = cv2.imread(str(run / "files" / row["input.path"]))
    assert np.array_equal(cv2.cvtColor(logged, cv2.COLOR_BGR2RGB), picture)


def test_bad_wandb_format_is_checked_before_anything_runs():
    with pytest.raises(ConfigError, match=r"wandb.image_format='webp': W&B shows jpeg or png"):
        validate(compose_cfg("wandb.image_format=webp"))
    with pytest.raises(ConfigError, match=r"^wandb.quality=101 must be between 1 and 100$"):
        validate(compose_cfg("wandb.quality=101"))


def test_local_jpeg_files_reach_the_sweep_summary(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers=backbone,decoder", "max_images=1", "backends=[local]",
                   "backends.local.kwargs.max_side=64", "backends.local.kwargs.image_format=jpeg",
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    from featvis.sweep.results import load_results

    jobs = load_results(sweep)
    assert [j.status for j in jobs] == ["ok", "ok"]
    for job in jobs:
        files = [job.dir / name for panels in job.panel_files.values() for name in panels.values()]
        assert files and all(f.suffix == ".jpg" and f.is_file() for f in files)
        assert all(max(cv2.imread(str(f)).shape[:2]) <= 64 for f in files)
    sheets = sorted((sweep / "summary").glob("contact_*.png"))
    assert sheets, "the summary drew no contact sheet from the JPEG files"


def test_bad_local_format_names_the_backend(tmp_path):
    proc = run_cli("max_images=1", "backends=[local]", "backends.local.kwargs.image_format=bmp",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert "backends.local.kwargs.image_format='bmp' is not a picture format" in error_line(proc)


def test_the_job_does_not_wait_for_the_wandb_run_to_open(tmp_path, monkeypatch):
    """Pictures are written and rows sent while the run opens; logged in order, at their steps, once it is."""
    import threading

    from featvis.backends import wandb as wandb_backend
    from featvis.backends.wandb_worker import WandbProcess

    released = threading.Event()
    waited = []

    class Gated(WandbProcess):
        def _write(self):  # nothing reaches the worker, not even "open", until the job has logged three images
            waited.append(released.wait(timeout=30))
            super()._write()

    monkeypatch.setattr(wandb_backend, "acquire", Gated)
    backends = {k: dict(v) for k, v in compose_cfg("backends=[wandb]").backends.items()}
    vis = FeatureVisualizer(backends, tmp_path, RunInfo(name="t", job_type="t", group=None))
    with vis:
        vis.start()
        for step in range(3):
            vis.add_panels([Panel("input", _photo(40, 60, step), f"img{step}")], step=step, image_id=f"img{step}")
            vis.add_scalars({"stats/x/mean": float(step)}, step=step)
        released.set()  # reached only if nothing above waited for the run
    assert waited == [True]
    (run,) = wandb_runs(tmp_path)
    rows = history(wandb_records(run))
    assert [r["_step"] for r in rows] == [0, 1, 2]
    assert [r["stats/x/mean"] for r in rows] == [0.0, 1.0, 2.0]
    assert all(r["input._type"] == "image-file" for r in rows)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (31, 47), (480, 640)])
def test_png_files_decode_to_exactly_the_picture(shape):
    import io

    from PIL import Image  # a second decoder, strict about chunks and CRCs

    rng = np.random.default_rng(sum(shape))
    pictures = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8)] + ([_photo(*shape)] if min(shape) > 16 else [])
    for picture in pictures:
        data = PNG.encode(picture)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.dtype == np.uint8 and decoded.shape == picture.shape
        assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), picture)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.mode == "RGB" and np.array_equal(np.asarray(image), picture)


def test_png_refuses_what_is_not_an_rgb_picture():
    with pytest.raises(ValueError, match="RGB picture"):
        PNG.encode(np.zeros((4, 4), np.uint8))
