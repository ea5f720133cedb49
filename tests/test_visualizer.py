"""The job's visualizer: every backend gets each picture, encoded once per format whichever backends want it."""

import cv2
import numpy as np
from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import BaseVisBackend

from featvis.backends import encoding as png_module
from featvis.backends.adapter import MMEngineBackend
from featvis.backends.base import RunInfo
from featvis.backends.local import FeatvisLocalVisBackend, panel_file
from featvis.backends.visualizer import FeatureVisualizer
from featvis.render.panel import Panel
from tests.helpers import compose_cfg, history, job_config, wandb_records, wandb_runs


def test_local_and_wandb_share_one_png_encoding_per_picture(tmp_path, monkeypatch):
    calls = []
    real = png_module.PictureFormat.encode
    monkeypatch.setattr(png_module.PictureFormat, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = compose_cfg("backends=[local,wandb]", "wandb.image_format=png", "wandb.max_side=null")  # full-size PNG
    backends = {k: dict(v) for k, v in cfg.backends.items()}
    pictures = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(3)]
    vis = FeatureVisualizer(backends, tmp_path, RunInfo(name="t", job_type="t", group=None))
    with vis:
        vis.start()
        for i, picture in enumerate(pictures):
            vis.add_panels([Panel("input", picture, f"img{i}")], step=i, image_id=f"img{i}")
    assert len(calls) == 3  # not 6
    for i, picture in enumerate(pictures):  # what the local backend wrote is the picture, RGB as given
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "local" / f"img{i}" / "input.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(written, picture)
    (run,) = wandb_runs(tmp_path)
    rows = history(wandb_records(run))  # one row per step, its picture logged from the shared encoding
    assert [r["input._type"] for r in rows] == ["image-file"] * 3


def test_a_job_encodes_each_of_its_pictures_once(tmp_path, monkeypatch):
    from featvis.config.job import JobInfo
    from featvis.data.paths import ASSETS
    from featvis.pipeline import job as pipeline

    calls = []
    real = png_module.PictureFormat.encode
    monkeypatch.setattr(png_module.PictureFormat, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = job_config("backends=[local,wandb]", "layers=dense", f"image={ASSETS / 'demo/images/scene_000.png'}")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path))
    written = sorted((result.output_dir / "local").rglob("*.png"))
    # once for the local PNGs, once for W&B's JPEGs (the scenes are smaller than wandb.max_side)
    assert len(written) == len(result.panels["scene_000"]) > 30 and len(calls) == 2 * len(written)
    (run,) = wandb_runs(result.output_dir)
    (row,) = history(wandb_records(run))
    assert sum(k.endswith("._type") and row[k] == "image-file" for k in row) == len(written)


class _Recording(BaseVisBackend):
    """An MMEngine backend that knows nothing of featvis: it records what it is called with."""

    calls: list = []

    @property
    def experiment(self):
        return self

    def _init_env(self):
        pass

    def add_config(self, config, **kwargs):
        self.calls.append(("add_config", dict(config)))

    def add_image(self, name, image, step=0, **kwargs):
        self.calls.append(("add_image", name, image.shape, step, sorted(kwargs)))

    def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs):
        self.calls.append(("add_scalars", scalar_dict, step))

    def close(self):
        self.calls.append(("close",))


def test_mmengine_backends_are_wrapped_and_get_plain_add_image_calls(tmp_path):
    VISBACKENDS.register_module(name="FeatvisTestRecording", module=_Recording, force=True)
    _Recording.calls = []
    picture = np.zeros((6, 8, 3), np.uint8)
    vis = FeatureVisualizer({"rec": {"type": "FeatvisTestRecording"}}, tmp_path, RunInfo("t", "t", None))
    assert isinstance(vis.backends["rec"], MMEngineBackend) and vis.formats == []
    assert vis.backends["rec"].inner._save_dir == str(tmp_path / "rec")
    with vis:
        vis.start()
        vis.add_config({"a": 1})
        vis.add_panels([Panel("input", picture, "cap"), Panel("featmap/x", picture, "cap", layer="x",
                                                               stats={"mean": 1.0})], step=2, image_id="img")
        vis.add_scalars({"stats/x/mean": 1.0}, step=2)
    assert _Recording.calls == [("add_config", {"a": 1}), ("add_image", "input", (6, 8, 3), 2, []),
                                ("add_image", "featmap/x", (6, 8, 3), 2, []),
                                ("add_scalars", {"stats/x/mean": 1.0}, 2), ("close",)]


def test_featvis_backends_still_take_mmengines_add_image(tmp_path):
    backend = FeatvisLocalVisBackend(str(tmp_path))
    picture = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    backend.add_image("featmap/x", picture, step=3)
    written = cv2.cvtColor(cv2.imread(str(panel_file(tmp_path, "00003", "featmap/x"))), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, picture)
    backend.close()


def test_local_files_are_written_on_the_encoding_threads_and_wandb_gets_panels_in_order(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(png_module, "workers", lambda: 2)  # as on any machine with two cores or more
    threads = {"local": [], "wandb": []}
    for key, cls in (("local", FeatvisLocalVisBackend), ("wandb", VISBACKENDS.get("FeatvisWandbVisBackend"))):
        real = cls.add_panel

        def spy(self, panel, *a, _real=real, _key=key, **k):
            threads[_key].append((panel.name, threading.current_thread().name))
            return _real(self, panel, *a, **k)
        monkeypatch.setattr(cls, "add_panel", spy)
    cfg = compose_cfg("backends=[local,wandb]")
    vis = FeatureVisualizer({k: dict(v) for k, v in cfg.backends.items()}, tmp_path, RunInfo("t", "t", None))
    pictures = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(6)]
    panels = [Panel(f"featmap/l{i}", p, f"l{i}", layer=f"l{i}") for i, p in enumerate(pictures)]
    with vis:
        vis.start()
        vis.add_panels(panels, step=0, image_id="img")
    assert {name for name, _ in threads["local"]} == {p.name for p in panels}
    assert all(thread.startswith("featvis-encode") for _, thread in threads["local"])
    me = threading.current_thread().name
    assert threads["wandb"] == [(p.name, me) for p in panels]  # in order, on the calling thread
    for i, picture in enumerate(pictures):
        written = cv2.imread(str(panel_file(tmp_path / "local", "img", f"featmap/l{i}")))
        assert np.array_equal(cv2.cvtColor(written, cv2.COLOR_BGR2RGB), picture)
    (run,) = wandb_runs(tmp_path)
    (row,) = history(wandb_records(run))
    assert all(row[f"{p.name}._type"] == "image-file" for p in panels)


def test_a_failed_local_write_reaches_the_caller(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(png_module, "workers", lambda: 2)
    vis = FeatureVisualizer({"local": dict(compose_cfg("backends=[local]").backends["local"])}, tmp_path,
                            RunInfo("t", "t", None))
    (tmp_path / "local" / "img").mkdir(parents=True)
    (tmp_path / "local" / "img" / "featmap").write_text("a file where a folder should be")
    picture = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(OSError):
        vis.add_panels([Panel("input", picture, "in"), Panel("featmap/x", picture, "x", layer="x")],
                       step=0, image_id="img")
    vis.close()
