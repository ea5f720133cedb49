"""Bounded work (the reliability issue): the memory a job needs is checked before any image is decoded,
decompression bombs and entries that are no image files are skipped and said, unmatched masks are said."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Resize

from featvis.config.job import JobInfo
from featvis.data.images import Sample
from featvis.engine import budget as memory
from featvis.engine import room
from featvis.errors import ConfigError
from featvis.pipeline import job as pipeline
from tests.helpers import DEMO_IMAGE, ROOT, cli_env, compose_cfg, error_line, job_config, png_header_claiming, run_cli

GiB = 1 << 30


# ---------------------------------------------------------------- the pixels as fed, and what they cost


@pytest.mark.parametrize("transform", [
    {"type": "Resize", "scale": (2048, 1024), "keep_ratio": True},
    {"type": "Resize", "scale": (64, 48), "keep_ratio": True},
    {"type": "Resize", "scale": (50, 30), "keep_ratio": False},
    {"type": "Resize", "scale_factor": 0.5, "keep_ratio": True},
    {"type": "Resize", "scale": 40, "keep_ratio": True},
])
@pytest.mark.parametrize("size", [(37, 91), (91, 37), (64, 64)])
def test_fed_size_is_what_mmcvs_resize_makes(transform, size):
    resized = Resize(**{k: v for k, v in transform.items() if k != "type"})({"img": np.zeros((*size, 3), np.uint8)})
    assert memory.fed_size([{"type": "LoadImageFromFile"}, transform], size) == (resized["img"].shape[:2], None)


def test_fed_size_names_a_resize_it_does_not_know():
    assert memory.fed_size([{"type": "MyResize", "scale": (8, 8)}], (10, 20)) == ((10, 20), "MyResize")


def test_live_tensors_count_bytes_while_they_live():
    counter = memory.LiveTensors()
    with counter:
        kept = torch.ones(1000, 1000)  # 4 MB, kept
        view = kept[:10]  # a view: the same storage, not counted again
        freed = torch.ones(500, 1000)  # 2 MB, freed at once
        del freed
        torch.zeros(10)  # 40 bytes, never held
    assert max(counter.trace["cpu"]) == 6_000_000
    assert counter.live["cpu"] == 4_000_000
    assert counter.made["cpu"] == 6_000_040
    del kept, view


@pytest.mark.parametrize("ops", [
    [lambda p: 10 * p, lambda p: 7e4],  # convolutions; a fixed-size pooled map (which the small passes show)
    [lambda p: 10 * p, lambda p: 2e-3 * p * p],  # ... and an attention over every pixel (NonLocal)
    [lambda p: 5e5 + 3 * p, lambda p: 100 * p + 1e-3 * p * p],  # fixed and growing parts alive at one op
])
def test_fit_extrapolates_ops_that_grow_with_the_pixels_their_square_or_not(ops):
    p1, p2 = 1024.0, 4096.0  # the probe's 32x32 and 64x64 passes
    fit = memory.Fit.of(p1, [op(p1) for op in ops], p2, [op(p2) for op in ops])
    for pixels in (p1, p2, 512.0 * 1024, 1024.0 * 2048):
        truth = max(op(pixels) for op in ops)
        assert truth <= fit(pixels) * (1 + 1e-9) and fit(pixels) <= truth * (1 + 1e-9)


def test_probe_of_the_demo_model_predicts_a_larger_forward_pass():
    from mmseg.apis import inference_model

    from featvis.model import cache as model_cache

    loaded = model_cache.load("featvis::configs/demo_pspnet.py", "featvis::checkpoints/demo_pspnet.pth", "cpu")
    pipeline_before = repr(loaded.model.cfg.test_pipeline)
    found = memory.probe(loaded.model)
    assert memory.probe(loaded.model) is found  # measured once per model
    assert repr(loaded.model.cfg.test_pipeline) == pipeline_before  # the probe's resize left no trace
    assert all(not module._forward_hooks for module in loaded.model.modules())
    classes = len(loaded.dataset_meta["classes"])
    assert found.retained["cpu"] == 4 * classes + 8  # mmseg's float logits and int64 prediction per pixel
    assert found.outputs["decode_head.conv_seg"] == [(4 * classes / 64, 1)]  # one map, 1/8 of the input's side
    image = np.zeros((384, 512, 3), np.uint8)  # fed as it is: the demo's Resize keeps it within 256, so scale it
    counter = memory.LiveTensors()
    saved = loaded.model.cfg.test_pipeline
    loaded.model.cfg.test_pipeline = [dict(t, scale=(512, 512)) if t["type"] == "Resize" else t for t in saved]
    try:
        with counter:
            inference_model(loaded.model, image)
    finally:
        loaded.model.cfg.test_pipeline = saved
    actual = max(counter.trace["cpu"])  # 12x the pixels of the probe's larger pass
    assert 0.95 * actual <= found.forward["cpu"](384 * 512) <= 1.1 * actual


# ---------------------------------------------------------------- the plan: refusals and depths


def _sample(tmp_path: Path, name: str, h: int, w: int) -> Sample:
    return Sample(name, tmp_path / f"{name}.png", None, (h, w))


def _budget(host_bytes: int, workers: int = 2, holds_all: bool = False) -> memory.Budget:
    return memory.Budget(None, pipeline=[], layers=[], drawn=["a", "b"], gradients=False, slide=False,
                         host=memory.Memory(host_bytes, "test"), device=None, workers=workers, holds_all=holds_all)


def test_plan_keeps_the_default_depths_when_memory_is_plenty(tmp_path):
    samples = [_sample(tmp_path, str(i), 100, 100) for i in range(10)]
    kept, refused, plan = _budget(64 * GiB).plan(samples, 1, prefetch=2, drawer=2)
    assert kept == samples and refused == [] and (plan.prefetch, plan.drawer) == (2, 2)


def test_plan_lowers_the_depths_before_refusing_and_stays_within_memory(tmp_path):
    samples = [_sample(tmp_path, str(i), 2000, 2000) for i in range(10)]
    budget = _budget(64 * GiB)
    cost = budget.cost(samples[0])
    at_depth_1, _ = budget.need(cost, cost, 10, 1, 1, 1)
    at_default, _ = budget.need(cost, cost, 10, 1, 2, 8)
    assert at_default > at_depth_1
    budget = _budget(int((at_depth_1 + at_default) / 2 / memory.MARGIN))
    kept, refused, plan = budget.plan(samples, 1, prefetch=2, drawer=8)
    assert kept == samples and refused == []
    assert (plan.prefetch, plan.drawer) < (2, 8) and plan.need <= memory.MARGIN * budget.host.bytes


def test_shared_normalization_that_would_hold_every_image_is_refused(tmp_path):
    """normalize.mode=shared keeps each image and its result until the last is in: memory grows with the run."""
    samples = [_sample(tmp_path, str(i), 1000, 1000) for i in range(500)]
    _, _, plan = _budget(2 * GiB).plan(samples, 1, prefetch=2, drawer=2)  # per_map: a few images at a time
    assert plan.need < GiB
    with pytest.raises(ConfigError, match=r"^normalize.mode=shared keeps each image .* these 500 images need about "
                                          r".* use normalize.mode=percentile or per_map, or fewer images"):
        _budget(2 * GiB, holds_all=True).plan(samples, 1, prefetch=2, drawer=2)
    _, _, plan = _budget(2 * GiB, holds_all=True).plan(samples[:10], 1, prefetch=2, drawer=2)
    assert plan.need <= memory.MARGIN * 2 * GiB


def test_an_image_too_large_alone_is_refused_and_the_others_kept(tmp_path):
    small = [_sample(tmp_path, str(i), 100, 100) for i in range(3)]
    huge = _sample(tmp_path, "huge", 20000, 20000)
    budget = _budget(GiB)
    kept, refused, _ = budget.plan([small[0], huge, *small[1:]], 1, prefetch=2, drawer=2)
    assert kept == small
    (problem,) = refused
    assert problem.path == huge.image_path
    assert f"image {huge.image_path} (20000x20000) needs about" in problem.message
    assert "over the 922 MiB featvis may use (90% of 1.0 GiB, test)" in problem.message
    assert "max_image_pixels under 400,000,000" in problem.message


def test_memory_available_reads_meminfo_and_cgroups_v1_and_v2(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:       24683664 kB\nMemAvailable:    2000000 kB\n")
    assert room._mem_available(tmp_path / "meminfo") == memory.Memory(2_048_000_000, "MemAvailable")
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text("1000000000\n")
    (v2 / "job" / "memory.current").write_text("600000000\n")
    (v2 / "job" / "memory.stat").write_text("anon 1\ninactive_file 100000000\n")
    (tmp_path / "cgroup2").write_text("0::/job\n")
    assert room._cgroup_room(tmp_path / "cgroup2", v2).bytes == 500_000_000
    (v2 / "job" / "memory.max").write_text("max\n")
    assert room._cgroup_room(tmp_path / "cgroup2", v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)  # in a container: the cgroup's own folder mounted as the root
    (v1 / "memory" / "memory.limit_in_bytes").write_text("800000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("300000000\n")
    (tmp_path / "cgroup1").write_text("5:cpu:/\n4:memory:/process_api/abc\n")
    assert room._cgroup_room(tmp_path / "cgroup1", v1).bytes == 500_000_000


# ---------------------------------------------------------------- jobs as users run them


def _run_bounded(address_space: int, *args: str) -> subprocess.CompletedProcess:
    """`run.py <args>` in a process that cannot map more than `address_space` bytes (ulimit -v)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=600, preexec_fn=limit)


def test_huge_model_scale_is_refused_in_one_line_before_anything_is_allocated(tmp_path):
    """Before: killed by the OOM killer at 18.4 GB after 56 s, exit 137, nothing said. With the address
    space bounded, any attempt at the 22 GB resize would fail with a MemoryError or OpenCV's error."""
    out = tmp_path / "X"
    proc = _run_bounded(8 * GiB, "model.scale=[100000,100000]", "backends=[local]", f"hydra.run.dir={out}")
    line = error_line(proc)
    assert f"image {DEMO_IMAGE.parent}" in line and "its forward pass at 100000x75000 pixels" in line
    assert "use a smaller model.scale=[width,height]" in line and "max_memory_gib=" in line
    assert not (out / "featvis").exists()


def test_image_over_the_memory_is_skipped_like_an_unreadable_one(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(DEMO_IMAGE.read_bytes())
    cv2.imwrite(str(folder / "big.png"), np.zeros((2000, 2000), np.uint8))  # a small file: 4 Mpx to draw
    out = tmp_path / "X"
    proc = run_cli(f"image={folder}", "backends=[local]", "max_memory_gib=0.2", f"hydra.run.dir={out}")
    line = error_line(proc, code=3)
    assert "1 image(s) skipped, first big.png: image" in line and "(2000x2000) needs about" in line
    assert "over the 184 MiB featvis may use (90% of 205 MiB, max_memory_gib=0.2)" in line
    skipped = (out / "featvis" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{folder / 'big.png'}\t")
    assert sorted(p.name for p in (out / "featvis" / "local").iterdir() if p.is_dir()) == ["a", "b"]


def test_batch_that_does_not_fit_is_refused_with_one_that_does(tmp_path):
    """The demo scenes fed at 2048x1536: about 0.4 GiB per image in the forward pass; 1 GiB holds one or two."""
    cfg = job_config("model.scale=[2048,2048]", "batch_size=3", "max_memory_gib=1", "backends=[local]")
    with pytest.raises(ConfigError, match=r"^batch_size=3: 3 images of 256x192 \(fed at 2048x1536\) need about "
                                          r".* use batch_size=[12] \(or lower model.scale\)$"):
        pipeline.run(cfg, JobInfo(output_dir=tmp_path / "X"))
    assert not (tmp_path / "X" / "featvis").exists()


def test_bomb_and_fifo_in_a_folder_skipped_and_said_the_others_drawn(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(DEMO_IMAGE.read_bytes())
    png_header_claiming(folder / "bomb.png", 60000, 60000)
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    out = tmp_path / "X"
    proc = run_cli(f"image={folder}", "backends=[local]", f"hydra.run.dir={out}")
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"featvis: warning: image={folder}: 2 entries skipped, not readable files: "
                               "loop.png (a symbolic link loop), pipe.png (a FIFO)")
    assert lines[1].startswith("featvis: error: 1 image(s) skipped, first bomb.png: image")
    assert "60000x60000 (3,600,000,000 pixels), over max_image_pixels=89,478,485" in lines[1]
    assert "DecompressionBomb" not in proc.stderr + proc.stdout
    assert (out / "featvis" / "local" / "a" / "prediction.png").is_file()
    assert (out / "featvis" / "skipped.txt").read_text().startswith(f"{folder / 'bomb.png'}\t")


def test_bomb_alone_is_one_line(tmp_path):
    bomb = png_header_claiming(tmp_path / "bomb.png", 60000, 60000)
    line = error_line(run_cli(f"image={bomb}", "backends=[local]", f"hydra.run.dir={tmp_path / 'X'}"))
    assert f"image {bomb} is 60000x60000" in line and "raise max_image_pixels" in line


def test_max_image_pixels_is_validated():
    from featvis.config.schema import validate

    with pytest.raises(ConfigError, match="max_image_pixels=0 must be between 1 and 1073741824"):
        validate(compose_cfg("max_image_pixels=0"))
    with pytest.raises(ConfigError, match="max_memory_gib=-1.0 must be a positive number of GiB"):
        validate(compose_cfg("max_memory_gib=-1"))


def test_mask_folder_matching_no_image_is_a_warning_on_stderr(tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "other.png"), np.zeros((192, 256), np.uint8))
    cfg = job_config(f"image={DEMO_IMAGE}", f"gt_mask={masks}", "backends=[local]")
    result = pipeline.run(cfg, JobInfo(output_dir=tmp_path / "X"))
    assert result.images == [DEMO_IMAGE.stem]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featvis: warning: ")]
    assert lines == [f"featvis: warning: gt_mask={masks} matched none of the 1 image(s) by file stem: no ground "
                     "truth is drawn; name each mask after its image "
                     f"(the mask of {DEMO_IMAGE.name} is {DEMO_IMAGE.stem}.png)"]
    assert not (tmp_path / "X" / "featvis" / "local" / DEMO_IMAGE.stem / "ground_truth.png").exists()


def test_probe_leaves_torch_dynamo_unimported():
    """TorchDispatchMode wraps a mode's __torch_dispatch__ in dynamo's disable unless told not to: its
    first call imported torch._dynamo (0.9 s and 33 MB: more than the demo job's three forward passes)."""
    code = ("import sys; from featvis.model.load import load_model; from featvis.engine.budget import probe; "
            "m = load_model('featvis::configs/demo_pspnet.py', 'featvis::checkpoints/demo_pspnet.pth', 'cpu').model; "
            "assert probe(m) is not None; print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"
