"""batch_size: several images in one forward pass draw what each would alone; decoding runs ahead."""

import threading
import time

import cv2
import numpy as np
import pytest

from featvis.config.job import JobInfo
from featvis.data.batches import same_shape_batches
from featvis.data.paths import ASSETS
from featvis.data.prefetch import Prefetch
from featvis.pipeline import job as pipeline
from tests.helpers import compose_cfg, job_config


class _Item:
    def __init__(self, shape, name):
        self.image_bgr = np.zeros(shape, np.uint8)
        self.name = name


def test_batches_hold_one_shape_and_at_most_size_images():
    shapes = [(4, 4, 3)] * 5 + [(6, 4, 3)] * 2 + [(4, 4, 3)]
    items = [_Item(s, i) for i, s in enumerate(shapes)]
    got = [[it.name for it in b] for b in same_shape_batches(items, 2)]
    assert got == [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert [[it.name for it in b] for b in same_shape_batches(items, 1)] == [[i] for i in range(8)]


def test_prefetch_reads_ahead_in_order_and_raises_where_the_error_was():
    seen = []

    def produce():
        for i in range(5):
            seen.append((i, threading.current_thread().name))
            yield i
        raise ValueError("broken image 5")

    with Prefetch(produce(), depth=3) as items:
        assert next(items) == 0
        time.sleep(0.2)  # the worker decodes ahead, up to the depth
        assert len(seen) >= 3 and all(name == "featvis-decode" for _, name in seen)
        assert [next(items) for _ in range(4)] == [1, 2, 3, 4]
        with pytest.raises(ValueError, match="broken image 5"):
            next(items)


def test_leaving_early_stops_the_worker():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    prefetch = Prefetch(endless(), depth=2)
    with prefetch as items:
        next(items)
    assert not prefetch._thread.is_alive()


def _pictures(result):
    out = {}
    for path in sorted((result.output_dir / "local").rglob("*.png")):
        out[str(path.relative_to(result.output_dir))] = cv2.imread(str(path))
    return out


def test_a_batched_job_draws_what_one_image_at_a_time_draws(tmp_path):
    scenes = str(ASSETS / "demo" / "images")
    one = pipeline.run(job_config("backends=[local]", f"image={scenes}", "layers=backbone"),
                       JobInfo(output_dir=tmp_path / "one"))
    many = pipeline.run(job_config("backends=[local]", f"image={scenes}", "layers=backbone", "batch_size=2"),
                        JobInfo(output_dir=tmp_path / "many"))
    assert one.images == many.images and one.panels == many.panels
    assert (one.forwards, one.passes) == (3, 3)
    assert (many.forwards, many.passes) == (3, 2)  # the first image alone (the early checks), then two at once
    a, b = _pictures(one), _pictures(many)
    assert sorted(a) == sorted(b) and len(a) > 10
    for name in a:  # batched convolutions may round differently in the last bits: a colour level at most
        diff = np.abs(a[name].astype(int) - b[name].astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, name


def test_batch_size_is_checked():
    from featvis.config.schema import validate
    from featvis.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^batch_size=0 must be between 1 and 1024"):
        validate(compose_cfg("batch_size=0"))


def test_a_batched_sweep_still_shares_its_forward_passes(tmp_path):
    from featvis.sweep.results import load_results
    from tests.helpers import run_cli

    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "layers=backbone,decoder", "batch_size=3", "backends=[local]", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    jobs = load_results(sweep)
    assert [j.status for j in jobs] == ["ok", "ok"]
    assert [(j.forwards, j.reused) for j in jobs] == [(3, 0), (0, 3)]
    assert all(len(j.images) == 3 for j in jobs)


def test_a_batched_slide_job_draws_what_one_image_at_a_time_draws(tmp_path):
    """Slide inference stitches each batch item's windows on its own: batching changes nothing."""
    scenes = str(ASSETS / "demo" / "images")
    slide = ("+model.cfg_options={model.test_cfg.mode: slide, model.test_cfg.+crop_size: [128, 128], "
             "model.test_cfg.+stride: [96, 96]}")
    one = pipeline.run(job_config("backends=[local]", f"image={scenes}", "layers=backbone", slide),
                       JobInfo(output_dir=tmp_path / "one"))
    many = pipeline.run(job_config("backends=[local]", f"image={scenes}", "layers=backbone", slide, "batch_size=2"),
                        JobInfo(output_dir=tmp_path / "many"))
    assert many.passes == 2 and one.panels == many.panels
    a, b = _pictures(one), _pictures(many)
    assert sorted(a) == sorted(b) and len(a) > 10
    for name in a:
        diff = np.abs(a[name].astype(int) - b[name].astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, name
