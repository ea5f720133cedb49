#!/usr/bin/env python
"""Peak memory of recording many layers: featvis's reducing hooks against keeping every output.

    python benchmarks/bench_memory.py [--layers '*@Conv2d'] [--reduction select_max]
                                      [--repeats 2] [--json out.json]

One model is loaded once (untimed), then three phases run in this one process, each one
`mmseg.apis.inference_model` call on the same model and the same image:
  (a) plain     inference_model, no hooks;
  (b) featvis   FeatureRecorder on the chosen layers (default: the `dense` preset,
                every Conv2d: 68 layers on ANN) with the chosen reduction, reduced inside
                the hooks; what recorder.pop() returns is kept until the phase ends;
  (c) full      the MMSegmentation doc script's way: forward hooks that keep every
                output whole (`outputs[name] = output`), on the same layers.
featvis promises that (b) costs about what (a) costs, whatever the number of layers
(target: peak RSS (b)/(a) <= 1.2x); (c) shows what that saves.
The model is ANN R50-D8 with random weights (nothing can be downloaded here: trained
weights take the same memory), on a deterministic 512x1024 image that the test pipeline
resizes to 1024x2048.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import MIB, PeakRSS, busy_cpu_of_others, cleanup, default_image, parse_common  # noqa: E402

ANN = "mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py"
PHASES = {"a": "plain", "b": "featvis", "c": "full outputs"}


def tensors_in(output):
    """The tensors a module output holds (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from tensors_in(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from tensors_in(item)


def run_plain(model, image) -> dict:
    from mmseg.apis import inference_model

    return {"result": inference_model(model, image), "kept_bytes": 0, "kept_maps": 0}


def run_featvis(model, image, layers, reduce_fn) -> dict:
    from mmseg.apis import inference_model

    from featvis.record.recorder import FeatureRecorder

    with FeatureRecorder(layers, reduce_fn, watch=getattr(model, "backbone", None)) as recorder:
        result = inference_model(model, image)
        maps = recorder.pop()
    # `maps` is returned, so it stays alive until the measurement of the phase has ended,
    # as it does in a featvis job (the panels are drawn from it after the forward).
    # Selected layers the forward never ran (e.g. an auxiliary head, used in training only).
    idle = [layer.name for layer in layers
            if not any(key == layer.name or key[len(layer.name):][:1] in ("#", "[", ":")
                       for key in maps if key.startswith(layer.name))]
    return {"result": result, "kept": maps, "kept_maps": len(maps), "idle": idle,
            "kept_bytes": sum(r.maps.nbytes for per_item in maps.values() for r in per_item)}


def run_full(model, image, layers) -> dict:
    """The hooks of MMSegmentation's feature-map doc script: every output is kept whole."""
    from mmseg.apis import inference_model

    outputs = {}

    def hook_for(name):
        def hook(module, args, output):
            key, n = name, 1
            while key in outputs:  # a module called twice keeps both outputs, as featvis does
                n += 1
                key = f"{name}#{n}"
            outputs[key] = output.detach() if isinstance(output, torch.Tensor) else output
        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer.name)) for layer in layers]
    try:
        result = inference_model(model, image)
    finally:
        for handle in handles:
            handle.remove()
    return {"result": result, "kept": outputs, "kept_maps": len(outputs),
            "kept_bytes": sum(t.nbytes for out in outputs.values() for t in tensors_in(out))}


def measure(fn) -> dict:
    """Peak RSS and wall time of one phase; what the phase keeps is released only after
    the measurement has ended, then garbage-collected and trimmed before the next one."""
    cleanup()  # gc + malloc_trim: each phase starts from the heap the previous one left, trimmed
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    numbers = {"wall_s": wall, "start_rss_mib": mem.start / MIB, "peak_rss_mib": mem.peak / MIB,
               "growth_mib": (mem.peak - mem.start) / MIB,
               "kernel_peak_mib": mem.kernel_peak / MIB if mem.kernel_peak else None,
               "kept_maps": out["kept_maps"], "kept_mib": out["kept_bytes"] / MIB, "idle": out.get("idle")}
    del out
    cleanup()
    return numbers


def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def main() -> None:
    from featvis.reduce import registry as reductions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=ANN, help="mmseg config (default: ANN R50-D8, Cityscapes)")
    parser.add_argument("--layers", nargs="+", default=["*@Conv2d"],
                        help="layer specs, as layers.names (default: the dense preset, *@Conv2d)")
    parser.add_argument("--reduction", choices=reductions.names(), default="select_max")
    parser.add_argument("--topk", type=int, default=4, help="channels kept by --reduction topk")
    parser.add_argument("--repeats", type=int, default=2, help="measured runs of (a) and (b)")
    parser.add_argument("--full-repeats", type=int, default=1,
                        help="measured runs of (c) (default 1: it only shows the cost avoided)")
    parser.add_argument("--image", type=Path, help="default: a generated 512x1024 PNG")
    args = parse_common(parser)

    from mmseg.apis import inference_model

    from featvis.model.load import load_model
    from featvis.record.layers import select_layers

    tmp = tempfile.TemporaryDirectory(prefix="featvis-bench-img-")
    image_path = (args.image or default_image("ann", Path(tmp.name))).resolve()
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)  # decoded once, outside every phase
    if image is None:
        raise SystemExit(f"cannot read image {image_path}")

    # Loaded once, untimed: the phases compare inference only, on the very same weights.
    model = load_model(args.config, None, "cpu").model
    layers = select_layers(model, args.layers)
    reduce_fn = reductions.create(args.reduction, model, **({"topk": args.topk} if args.reduction == "topk" else {}))
    phases = {"a": lambda: run_plain(model, image),
              "b": lambda: run_featvis(model, image, layers, reduce_fn),
              "c": lambda: run_full(model, image, layers)}

    t0, others0 = time.perf_counter(), busy_cpu_of_others()
    # One untimed plain inference first: the first forward in a process pays one-off costs
    # (oneDNN kernel selection, page-faulting torch's allocator pools, lazy imports in the
    # test pipeline) that would otherwise land on whichever phase ran first.
    print("warm-up: plain inference ...", flush=True)
    cleanup()
    inference_model(model, image)
    # Then a, b, c, a, b, ...: (a) and (b) alternate and bracket (c), so slow drift (RSS
    # creeping up as the heap fragments, other load on the shared CPUs) hits (a) and (b)
    # alike; (c) runs fewer times, as it only shows what featvis avoids. Medians reported.
    order = [p for rep in range(args.repeats) for p in ("a", "b", "c") if p != "c" or rep < args.full_repeats]
    order += ["c"] * max(0, args.full_repeats - args.repeats)
    runs = {p: [] for p in phases}
    for i, p in enumerate(order, 1):
        runs[p].append(measure(phases[p]))
        m = runs[p][-1]
        print(f"[{i}/{len(order)}] ({p}) {PHASES[p]}: {m['wall_s']:.1f} s, peak {m['peak_rss_mib']:.0f} MiB "
              f"(+{m['growth_mib']:.0f}), kept {m['kept_mib']:.1f} MiB", flush=True)
    other_cpus = (busy_cpu_of_others() - others0) / (time.perf_counter() - t0)

    keys = ("wall_s", "start_rss_mib", "peak_rss_mib", "growth_mib", "kernel_peak_mib", "kept_maps", "kept_mib")
    med = {p: {k: median(rs, k) for k in keys} for p, rs in runs.items() if rs}
    ratio = {p: {k: med[p][k] / med["a"][k] for k in ("wall_s", "peak_rss_mib", "growth_mib", "kernel_peak_mib")
                 if med[p][k] is not None and med["a"][k]}
             for p in med if p != "a"}
    h, w = image.shape[:2]

    print(f"\n{args.config} (random weights), image {h}x{w}, {len(layers)} layers "
          f"({' '.join(args.layers)}), reduction {args.reduction}, torch threads {torch.get_num_threads()}")
    print(f"{'':18}{'runs':>5}{'wall s':>9}{'peak RSS MiB':>14}{'growth MiB':>12}{'kernel HWM MiB':>16}"
          f"{'maps kept':>11}{'kept MiB':>10}{'peak / (a)':>12}")
    for p, m in med.items():
        hwm = f"{m['kernel_peak_mib']:.0f}" if m["kernel_peak_mib"] else "n/a"
        rel = f"{ratio[p]['peak_rss_mib']:.2f}x" if p in ratio else "1.00x"
        print(f"({p}) {PHASES[p]:14}{len(runs[p]):5}{m['wall_s']:9.1f}{m['peak_rss_mib']:14.0f}"
              f"{m['growth_mib']:12.0f}{hwm:>16}{m['kept_maps']:11.0f}{m['kept_mib']:10.1f}{rel:>12}")
    verdict = "ok" if ratio["b"]["peak_rss_mib"] <= 1.2 else "ABOVE TARGET"
    print(f"(b)/(a) peak RSS {ratio['b']['peak_rss_mib']:.2f}x (target <= 1.2x: {verdict}); "
          + (f"(c)/(a) {ratio['c']['peak_rss_mib']:.2f}x; " if "c" in ratio else "")
          + f"(b)/(a) wall {ratio['b']['wall_s']:.2f}x")
    print("medians. RSS is this process's, model included (growth = peak - RSS at phase start); "
          "kept = sum of nbytes of the tensors each recorder kept.")
    idle = runs["b"][0]["idle"]
    print("maps kept: one per call of a layer that ran (a module called twice gives name#2)"
          + (f"; {len(idle)} selected layers never ran in inference: {', '.join(idle)}" if idle else ""))
    print(f"other processes kept {other_cpus:.2f} of {psutil.cpu_count()} CPUs busy meanwhile" +
          ("; wall times on shared CPUs are noisy (RSS is not)" if other_cpus > 0.2 else ""))

    if args.json:
        args.json.write_text(json.dumps({
            "config": args.config, "weights": "random", "image": str(image_path), "image_hw": [h, w],
            "layers": args.layers, "num_layers": len(layers), "reduction": args.reduction,
            "repeats": args.repeats, "full_repeats": args.full_repeats, "order": order,
            "torch_threads": torch.get_num_threads(), "other_cpus": other_cpus,
            "runs": runs, "median": med, "ratio": ratio}, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
