#!/usr/bin/env python
"""How much featvis costs over plain MMSegmentation: wall time and peak RSS, same image.

    python benchmarks/bench_pipeline.py [--model ann] [--image PATH] [--repeats 2] [--json out.json]

Two phases run in this one process:
  baseline  mmseg's own init_model + inference_model (what a user would write by hand);
  featvis   featvis.pipeline.job.run(): the same model load and inference, plus hooks,
            reductions, rendering and logging to local PNGs and an offline W&B run.
Public models get random weights (model.checkpoint=null: nothing can be downloaded here),
which cost the same time and memory as trained ones.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("demo", "ann", "pspnet", "deeplabv3", "segformer")
MIB = 2 ** 20


class PeakRSS:
    """Peak RSS of this process (not its children) while the `with` block runs, sampled
    every `interval` s by a background thread. Where Linux allows, the kernel's own
    high-water mark (VmHWM, reset via /proc/self/clear_refs) is read too: it also sees
    peaks shorter than the sampling interval."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.proc, self.kernel_peak = interval, psutil.Process(), None

    def __enter__(self) -> "PeakRSS":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5": reset VmHWM to the current RSS
            self._hwm = True
        except OSError:
            self._hwm = False
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        if self._hwm:
            self.kernel_peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024


def busy_cpu_of_others() -> float:
    """CPU seconds all processes but this one and its descendants have used since boot (idle
    time excluded). Torch's threads slow down a lot when other work shares their cores.
    The job's W&B worker and service are live children that are never waited for: psutil
    would count them as others although they are part of the job being measured (children
    that were waited for are in `children_user`/`children_system`)."""
    t, me = psutil.cpu_times(), psutil.Process()
    own = me.cpu_times()
    busy = sum(t) - sum(getattr(t, k, 0.0) for k in ("idle", "iowait", "guest", "guest_nice"))
    mine = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            mine += c.user + c.system
        except psutil.Error:
            pass
    return busy - mine


def cleanup() -> None:
    """Start every phase from the same state: collect Python garbage, empty torch's CUDA
    cache (a no-op on CPU), and hand freed heap pages back to the OS (glibc keeps them
    otherwise, and they would count in the next phase's RSS)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def measure(fn) -> dict:
    cleanup()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "peak_rss_mib": mem.peak / MIB, "growth_mib": (mem.peak - mem.start) / MIB,
            "kernel_peak_mib": mem.kernel_peak / MIB if mem.kernel_peak else None}


def compose_cfg(model: str, image: Path, extra=()):
    """The typed job config `python run.py <overrides>` would run, via Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    from featvis.config.schema import register_configs

    register_configs()
    overrides = [f"model={model}", "layers=decoder", "backends=[local,wandb]", "wandb.mode=offline",
                 f"image='{image}'", "gt_mask=null", "device=cpu"]  # cpu: as the baseline, even with a GPU
    if model != "demo":
        overrides.append("model.checkpoint=null")  # random weights: no download possible
    overrides += list(extra)  # the caller's own, last: they win
    from featvis.config.schema import validate

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    return validate(cfg)  # the typed Config a job runs on (model.checkpoint=auto -> the file or URL it names)


def run_baseline(config: str, checkpoint, image: Path) -> None:
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    model = init_model(config, checkpoint, device="cpu")
    # Public Cityscapes configs use SyncBN, which cannot run on CPU (it needs CUDA and
    # torch.distributed): swap it for plain BN, as featvis does off CUDA.
    model = revert_sync_batchnorm(model)
    img_bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)  # decoding is timed: featvis does it too
    inference_model(model, img_bgr)


def run_featvis(cfg) -> dict:
    from featvis.config.job import JobInfo
    from featvis.pipeline.job import run

    cfg = copy.deepcopy(cfg)  # run() resolves the config in place
    # each run in a folder of its own, all kept until the benchmark ends, as a sweep keeps its jobs': the
    # W&B worker (and wandb's service, whose files are in its first job's folder) serves them all
    out = Path(tempfile.mkdtemp(prefix="run-", dir=_RUNS.name))
    return measure(lambda: run(cfg, JobInfo(output_dir=out)))


_RUNS = tempfile.TemporaryDirectory(prefix="featvis-bench-")  # removed when the benchmark's process ends


def default_image(model: str, tmp: Path) -> Path:
    if model == "demo":
        from featvis.data.paths import ASSETS
        return ASSETS / "demo" / "images" / "scene_000.png"
    # A deterministic 512x1024 RGB picture (Cityscapes' aspect); the test pipeline resizes
    # it to 1024x2048, and the cost does not depend on its content.
    path = tmp / "bench_512x1024.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (512, 1024, 3), dtype=np.uint8))
    return path


def parse_common(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the options every benchmark has (--json, --threads), parse, and apply them."""
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from featvis.cli import quiet_library_warnings

    quiet_library_warnings()  # training-time notes, as in a featvis job
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="demo")
    parser.add_argument("--image", type=Path, help="default: a demo image, or a generated 512x1024 PNG")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each phase")
    args = parse_common(parser)

    from featvis.data.paths import resolve_model_config
    from featvis.errors import FeatvisError
    from featvis.model.checkpoints import resolve_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="featvis-bench-img-")
    image = (args.image or default_image(args.model, Path(tmp.name))).resolve()
    if not image.is_file():
        raise SystemExit(f"no image {image} (the demo images are made by: python -m featvis.demo.scenes)")
    cfg = compose_cfg(args.model, image)
    config = str(resolve_model_config(cfg.model.config))
    try:
        checkpoint = resolve_checkpoint(cfg.model.checkpoint)  # a local file, or None = random init
    except FeatvisError as err:
        raise SystemExit(f"{err} (the demo's is made by: python -m featvis.demo.train)") from None
    phases = {"baseline": lambda: measure(lambda: run_baseline(config, checkpoint, image)),
              "featvis": lambda: run_featvis(cfg)}

    t0, others0 = time.perf_counter(), busy_cpu_of_others()
    # One untimed run of each phase first: the first run in a process pays one-off costs
    # (imports, mmseg registry setup, oneDNN kernel selection, page-faulting torch's heap,
    # starting the W&B service) that a real job pays once too, but that would land on
    # whichever phase ran first. Then alternate the phases, so that drift (other load on
    # the machine, heap growth) hits both alike, and report medians.
    for name, phase in phases.items():
        print(f"warm-up: {name} ...", flush=True)
        phase()
    runs = {name: [] for name in phases}
    for rep in range(args.repeats):
        for name, phase in phases.items():
            runs[name].append(phase())
            print(f"run {rep + 1}/{args.repeats} {name}: {runs[name][-1]['wall_s']:.2f} s, "
                  f"peak {runs[name][-1]['peak_rss_mib']:.0f} MiB", flush=True)
    other_cpus = (busy_cpu_of_others() - others0) / (time.perf_counter() - t0)

    keys = ("wall_s", "peak_rss_mib", "growth_mib", "kernel_peak_mib")
    med = {name: {k: statistics.median(r[k] for r in rs) if rs[0][k] is not None else None for k in keys}
           for name, rs in runs.items()}
    ratio = {k: med["featvis"][k] / med["baseline"][k] for k in keys if med["baseline"][k]}
    h, w = cv2.imread(str(image)).shape[:2]
    weights = "trained weights" if checkpoint else "random weights"
    wandb_rss = sum(p.memory_info().rss for p in psutil.Process().children(recursive=True)) / MIB

    print(f"\nmodel {args.model} ({weights}), image {h}x{w}, repeats {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':12}{'wall s':>10}{'peak RSS MiB':>15}{'growth MiB':>13}{'kernel HWM MiB':>17}")
    for name, m in med.items():
        hwm = f"{m['kernel_peak_mib']:.0f}" if m["kernel_peak_mib"] else "n/a"
        print(f"{name:12}{m['wall_s']:10.2f}{m['peak_rss_mib']:15.0f}{m['growth_mib']:13.0f}{hwm:>17}")
    print(f"{'ratio':12}{ratio['wall_s']:9.2f}x{ratio['peak_rss_mib']:14.2f}x{ratio['growth_mib']:12.2f}x"
          f"    (targets <= 1.05x wall, <= 1.10x peak RSS)")
    print(f"medians. RSS is this process's only (growth = peak - RSS at phase start); the W&B worker and "
          f"service are processes of their own, not counted ({wandb_rss:.0f} MiB RSS now).")
    print(f"other processes kept {other_cpus:.2f} of {psutil.cpu_count()} CPUs busy meanwhile" +
          ("; timings on shared CPUs are noisy: use more --repeats or --threads 1" if other_cpus > 0.2 else ""))

    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "weights": weights, "image": str(image), "image_hw": [h, w],
            "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "other_cpus": other_cpus,
            "runs": runs, "median": med, "ratio": ratio, "wandb_service_rss_mib": wandb_rss}, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
