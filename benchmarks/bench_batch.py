#!/usr/bin/env python
"""A folder of images: plain mmseg, one featvis job, and one process per image.

    python benchmarks/bench_batch.py [--model ann] [--images 4 | --folder PATH]
                                     [--size HxW] [--content noise|photo] [--no-processes]
                                     [--set OVERRIDE ...]
                                     [--repeats 1] [--threads N] [--json out.json]

Three ways to get through the same N images, timed in one run of this script:
  (a) plain     mmseg in this process: init_model + revert_sync_batchnorm once, then
                cv2.imread + inference_model per image (what a user would write by hand;
                the floor: no hooks, no pictures);
  (b) featvis   featvis.pipeline.job.run() over the folder in this process: the same model
                load and inferences, plus hooks, reductions, the panels drawn and logged
                to local PNGs and an offline W&B run (drawn on worker threads while the
                model runs the next image; the W&B run in featvis's W&B worker process,
                whose CPU time is counted in (b)'s);
  (c) process   `python run.py image=<one file> ...` once per image, one after the other,
                as the MMSegmentation feature-map guide's one-image script requires: each
                image pays interpreter start, imports, config composition, model build
                and W&B init again.
Targets: (b)/(a) <= 1.10x wall; (c)/(b) shows what running one job over the folder saves.
`--model ann` (default) runs ANN R50-D8 with random weights (model.checkpoint=null: nothing
can be downloaded here; trained weights cost the same) on generated 512x1024 PNGs;
`--model demo` runs the shipped demo checkpoint on generated 192x256 PNGs. `--size 1024x2048`
generates images of that size instead (the demo model at Cityscapes size: this CPU's stand-in
for a GPU's pace, where drawing is the job's larger part). `--content noise` (default) makes
random pixels, the worst case for PNG and JPEG; `--content photo` crops of featvis's sample photo,
what a real split costs. (b) also reports the MB per image it stored: the W&B run's media and
the local folder. `--no-processes` skips (c).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import MIB, MODELS, ROOT, PeakRSS, busy_cpu_of_others, cleanup, compose_cfg, parse_common  # noqa: E402

PHASES = {"a": "plain mmseg", "b": "featvis job", "c": "process/image"}
SIZES = {"demo": (192, 256)}  # (height, width) of generated images; others: Cityscapes' aspect
DEFAULT_SIZE = (512, 1024)  # the test pipeline of the Cityscapes configs resizes it to 1024x2048


def make_images(folder: Path, n: int, size, content: str = "noise") -> List[Path]:
    """N deterministic RGB PNGs (seeded by their index). Inference cost does not depend on the
    content. noise: random pixels (decoding and encoding cost what the busiest photo's would);
    photo: a random crop of the sample photo, flipped or not, resized to `size`."""
    from featvis.data.paths import ASSETS

    photo = cv2.imread(str(ASSETS / "sample" / "grace_hopper.jpg"), cv2.IMREAD_COLOR)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        path = folder / f"img_{i:03d}.png"
        if content == "noise":
            picture = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        else:
            ph, pw = photo.shape[:2]
            ch = int(ph * rng.uniform(0.5, 0.8))
            cw = min(pw, int(ch * size[1] / size[0]))
            y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
            picture = cv2.resize(photo[y:y + ch, x:x + cw], (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
            picture = picture[:, ::-1] if i % 2 else picture
        cv2.imwrite(str(path), np.ascontiguousarray(picture))
        paths.append(path)
    return paths


def stored_mb(out: Path) -> Dict[str, float]:
    """MB the job stored: its W&B run's media (what an online run uploads) and its local pictures."""
    media = [p for d in out.rglob("files/media") for p in d.rglob("*") if p.is_file()]
    local = [p for d in out.rglob("local") if d.is_dir() for p in d.rglob("*") if p.is_file()]
    return {"wandb_mb": sum(p.stat().st_size for p in media) / 1e6,
            "local_mb": sum(p.stat().st_size for p in local) / 1e6}


class Marks(logging.Handler):
    """perf_counter() of featvis.pipeline's log lines: `model ... on cpu` (job.py: model built,
    layers selected) and `[i] stem: N pictures` (drawer.py: image i drawn and logged), to split (b)'s
    wall time per image without touching featvis's code."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loaded: Optional[float] = None
        self.drawn: List[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("model "):
            self.loaded = time.perf_counter()
        elif re.match(r"\[\d+\] ", msg):
            self.drawn.append(time.perf_counter())


def run_plain(config: str, checkpoint, images: List[Path]) -> dict:
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    t0 = time.perf_counter()
    # SyncBN in the public Cityscapes configs cannot run on CPU: plain BN, as featvis does.
    model = revert_sync_batchnorm(init_model(config, checkpoint, device="cpu"))
    load = time.perf_counter() - t0
    per_image = []
    for path in images:
        t = time.perf_counter()
        img_bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # decoding is timed: featvis does it too
        inference_model(model, img_bgr)
        per_image.append(time.perf_counter() - t)
    return {"load_s": load, "per_image_s": per_image, "finish_s": 0.0}


def run_featvis(cfg, out: Path) -> dict:
    from featvis.config.job import JobInfo
    from featvis.pipeline.job import run

    marks = Marks()
    logger = logging.getLogger("featvis.pipeline")  # the job's and the drawer's lines
    old_level = logger.level
    logger.setLevel(logging.INFO)  # INFO reaches our handler only: the root logger has none
    logger.addHandler(marks)
    try:
        t0 = time.perf_counter()
        run(copy.deepcopy(cfg), JobInfo(output_dir=out))  # a fresh copy per repeat
        end = time.perf_counter()
    finally:
        logger.removeHandler(marks)
        logger.setLevel(old_level)
    loaded = marks.loaded or t0
    bounds = [loaded] + marks.drawn
    # Images are drawn in a worker thread while the next one is inferred, so image i's
    # share is the time between "image i-1 drawn" and "image i drawn" (the first one
    # from "model built"); "finish" is closing the W&B run and renaming the results.
    return {"load_s": loaded - t0, "per_image_s": [b - a for a, b in zip(bounds, bounds[1:])],
            "finish_s": end - bounds[-1]}


def live_children_cpu() -> Dict[int, float]:
    """CPU seconds of each live descendant of this process (the W&B worker and its service)."""
    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            out[child.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def timed(fn) -> dict:
    """Wall time and peak RSS of one in-process phase. RSS is sampled every 50 ms (a 2 ms
    sampler, as bench_pipeline's, would take a noticeable share of 2 shared cores over
    minutes), and read from the kernel's high-water mark where Linux allows."""
    cleanup()  # gc + malloc_trim: every phase starts from the same heap state
    proc = psutil.Process()
    with PeakRSS(interval=0.05) as mem:
        c0, k0, t0 = proc.cpu_times(), live_children_cpu(), time.perf_counter()
        numbers = fn()
        numbers["wall_s"] = time.perf_counter() - t0
        c1, k1 = proc.cpu_times(), live_children_cpu()
    # CPU seconds of all this process's threads (torch's, the drawing threads) and of its
    # live children (the job's W&B worker and service): less sensitive than wall time to
    # other work on the cores, though torch's threads spin (and so burn CPU) longer when
    # they wait for a busy core.
    numbers["cpu_s"] = ((c1.user - c0.user) + (c1.system - c0.system)
                        + sum(cpu - k0.get(pid, 0.0) for pid, cpu in k1.items()))
    peak = max(mem.peak, mem.kernel_peak or 0)
    numbers["peak_rss_mib"] = peak / MIB
    return numbers


def override_value(path: Path) -> str:
    """A path as a Hydra override value: bare where Hydra's grammar allows (featvis names
    the W&B run after the overrides, and quotes would end up in the name), quoted otherwise."""
    s = str(path)
    return s if re.fullmatch(r"[\w./-]+", s) else "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def log_time(run_log: Path, pattern: str) -> Optional[float]:
    """Epoch time of the first line of Hydra's run.log matching `pattern` (ms resolution)."""
    if not run_log.is_file():
        return None
    for line in run_log.read_text(errors="replace").splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[featvis\.pipeline\.job\]\[INFO\] - " + pattern, line)
        if m:
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def run_processes(model: str, images: List[Path], out: Path, threads: Optional[int]) -> dict:
    """(c): one `python run.py` per image, sequentially, with bench_pipeline's overrides."""
    env = dict(os.environ)
    if threads:  # what --threads does in this process, for the children
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    per_image, to_model = [], []
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    for i, path in enumerate(images):
        job_dir = out / str(i)
        cmd = [sys.executable, str(ROOT / "run.py"), f"model={model}", "layers=decoder",
               "backends=[local,wandb]", "wandb.mode=offline", f"image={override_value(path)}",
               "gt_mask=null", "device=cpu", f"hydra.run.dir={override_value(job_dir)}"]
        if model != "demo":
            cmd.append("model.checkpoint=null")
        started, t = time.time(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        per_image.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"(c) failed on {path} (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        # Launch -> "model ... on cpu" in the job's log: interpreter start, imports, Hydra,
        # config checks, model build (and checkpoint load): what every process pays again.
        built = log_time(job_dir / "run.log", r"model ")
        to_model.append(built - started if built else None)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": time.perf_counter() - t0, "per_image_s": per_image, "start_to_model_s": to_model,
            # CPU of the run.py processes (and of whatever they waited for)
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            # The largest process waited for (Linux: KiB); the W&B services of (b) and (c)
            # are small and not counted in the in-process phases either.
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="ann")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=int, default=4, help="generate this many images (default 4)")
    source.add_argument("--folder", type=Path, help="use the images of this folder instead")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of (a) and (b), alternated; (c) runs once")
    parser.add_argument("--size", help="HxW of the generated images (default: 192x256 demo, 512x1024 others)")
    parser.add_argument("--content", choices=("noise", "photo"), default="noise", help="generated images' pixels")
    parser.add_argument("--no-processes", action="store_true", help="skip (c), one process per image")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="a Hydra override for (b), e.g. --set backends.local.kwargs.image_format=jpeg")
    args = parse_common(parser)

    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    import featvis.pipeline.job  # noqa: F401  (imported up front, as a script importing featvis would)
    from featvis.data.images import find_files
    from featvis.data.paths import resolve_model_config
    from featvis.errors import FeatvisError
    from featvis.model.checkpoints import resolve_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="featvis-bench-batch-")
    work = Path(tmp.name)
    if args.folder:
        folder = args.folder.resolve()
        images = find_files(str(folder), "image")  # featvis's own listing: the same files as (b)
    else:
        folder = work / "images"
        folder.mkdir()
        size = tuple(int(v) for v in args.size.split("x")) if args.size else SIZES.get(args.model, DEFAULT_SIZE)
        images = make_images(folder, args.images, size, args.content)
    cfg = compose_cfg(args.model, folder, args.set)  # image=<folder>, layers=decoder, local+wandb offline, cpu
    config = str(resolve_model_config(cfg.model.config))
    try:
        checkpoint = resolve_checkpoint(cfg.model.checkpoint)  # a local file, or None = random init
    except FeatvisError as err:
        raise SystemExit(f"{err} (the demo's is made by: python -m featvis.demo.train)") from None

    t_start, others0 = time.perf_counter(), busy_cpu_of_others()
    # One untimed inference first: the first forward in a process pays one-off costs
    # (mmseg's registries and lazy imports, oneDNN kernel selection, page-faulting torch's
    # allocator pools) that would land on whichever of (a) and (b) ran first. Not warmed:
    # what only featvis does (importing wandb, starting its service); it happens in a
    # background thread during (b)'s model load, as in every real job.
    print("warm-up: one plain inference ...", flush=True)
    model = revert_sync_batchnorm(init_model(config, checkpoint, device="cpu"))
    inference_model(model, cv2.imread(str(images[0]), cv2.IMREAD_COLOR))
    del model

    # (a) and (b) alternate, so that drift (other work on the shared cores, heap growth)
    # hits both alike; medians over --repeats. Each (b) writes to a fresh folder; deleting
    # it is untimed. (c) runs once, last: it only shows the order of magnitude of what a
    # one-image-per-process workflow pays, and it is by far the slowest.
    runs: Dict[str, List[dict]] = {"a": [], "b": []}
    for rep in range(args.repeats):
        runs["a"].append(timed(lambda: run_plain(config, checkpoint, images)))
        with tempfile.TemporaryDirectory(prefix="featvis-bench-job-") as out:
            runs["b"].append(timed(lambda: run_featvis(cfg, Path(out))))
            runs["b"][-1].update(stored_mb(Path(out)))
        for p in "ab":
            print(f"run {rep + 1}/{args.repeats} ({p}) {PHASES[p]}: {runs[p][-1]['wall_s']:.2f} s", flush=True)
    if not args.no_processes:
        print(f"(c) {len(images)} processes ...", flush=True)
        cleanup()
        runs["c"] = [run_processes(args.model, images, work / "jobs", args.threads)]
        print(f"(c) {PHASES['c']}: {runs['c'][0]['wall_s']:.2f} s", flush=True)
    other_cpus = max(0.0, (busy_cpu_of_others() - others0) / (time.perf_counter() - t_start))  # no -0.00

    n = len(images)
    median = {p: {"wall_s": med(r["wall_s"] for r in rs), "cpu_s": med(r["cpu_s"] for r in rs),
                  "peak_rss_mib": med(r["peak_rss_mib"] for r in rs),
                  "per_image_s": [med(r["per_image_s"][i] for r in rs) for i in range(n)]}
              for p, rs in runs.items()}
    for p in "ab":
        median[p]["load_s"] = med(r["load_s"] for r in runs[p])
        median[p]["finish_s"] = med(r["finish_s"] for r in runs[p])
    ratio = {"b/a": median["b"]["wall_s"] / median["a"]["wall_s"],
             "cpu b/a": median["b"]["cpu_s"] / median["a"]["cpu_s"]}
    if "c" in runs:
        median["c"]["start_to_model_s"] = runs["c"][0]["start_to_model_s"]
        ratio.update({"c/b": median["c"]["wall_s"] / median["b"]["wall_s"],
                      "c/a": median["c"]["wall_s"] / median["a"]["wall_s"]})
    for key in ("wandb_mb", "local_mb"):
        median["b"][key] = med(r[key] for r in runs["b"])

    h, w = cv2.imread(str(images[0])).shape[:2]
    weights = "trained weights" if checkpoint else "random weights"
    print(f"\nmodel {args.model} ({weights}), {n} images {h}x{w} ({folder}), repeats {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':20}{'wall s':>9}{'s / image':>11}{'vs (a)':>9}{'CPU s':>9}{'vs (a)':>9}{'peak RSS MiB':>14}")
    for p, m in median.items():
        print(f"({p}) {PHASES[p]:16}{m['wall_s']:9.2f}{m['wall_s'] / n:11.2f}"
              f"{m['wall_s'] / median['a']['wall_s']:8.2f}x{m['cpu_s']:9.1f}"
              f"{m['cpu_s'] / median['a']['cpu_s']:8.2f}x{m['peak_rss_mib']:14.0f}")
    # targets: a slow model's drawing hides behind inference (1.10x); the demo model stands in for
    # a GPU's pace, where featvis's own work shows (1.5x at Cityscapes size, 2x on small images)
    target = 1.10 if args.model != "demo" else (1.5 if h * w >= 1024 * 2048 else 2.0)
    verdict = "ok" if ratio["b/a"] <= target else "ABOVE TARGET"
    print(f"wall (b)/(a) {ratio['b/a']:.2f}x (target <= {target:.2f}x: {verdict}); "
          + (f"(c)/(b) {ratio['c/b']:.2f}x; " if "c/b" in ratio else "") + f"CPU (b)/(a) {ratio['cpu b/a']:.2f}x")
    print(f"(b) stored per image: W&B media {median['b']['wandb_mb'] / n:.2f} MB, "
          f"local pictures {median['b']['local_mb'] / n:.2f} MB")

    print(f"\nper image, s{'':10}{'(a) plain':>11}{'(b) featvis':>13}{'(c) process':>13}{'(c) to model':>14}")
    print(f"{'model load':22}{median['a']['load_s']:11.2f}{median['b']['load_s']:13.2f}{'-':>13}{'-':>14}")
    for i, path in enumerate(images):
        tm = median["c"]["start_to_model_s"][i] if "c" in median else None
        tc = f"{median['c']['per_image_s'][i]:13.2f}" if "c" in median else f"{'-':>13}"
        print(f"{path.name[:22]:22}{median['a']['per_image_s'][i]:11.2f}{median['b']['per_image_s'][i]:13.2f}"
              f"{tc}{(f'{tm:.2f}' if tm is not None else 'n/a'):>14}")
    print(f"{'finish':22}{'-':>11}{median['b']['finish_s']:13.2f}{'-':>13}{'-':>14}")
    print("medians. (a) per image: decode + inference_model. (b) per image: from the previous image drawn "
          "(the first: from the model built) to this one drawn and logged; finish: W&B run closed, results "
          "renamed. (c): each process's wall time; 'to model': launch to the model built (interpreter, "
          "imports, Hydra, model build), paid again by every process.")
    print("CPU s: this process's threads and live children (b's W&B worker and service) for (a)/(b), "
          "the run.py processes for (c); peak RSS: this process's for (a)/(b) (model included), the "
          "largest run.py process for (c); W&B's processes' RSS counted in neither.")
    print(f"other processes kept {other_cpus:.2f} of {psutil.cpu_count()} CPUs busy meanwhile" +
          ("; timings on shared CPUs are noisy: use more --repeats or --threads 1" if other_cpus > 0.2 else ""))

    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "weights": weights, "folder": str(folder), "images": [str(p) for p in images],
            "image_hw": [h, w], "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "other_cpus": other_cpus, "runs": runs, "median": median, "ratio": ratio}, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
