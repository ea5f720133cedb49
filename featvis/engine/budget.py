"""Bounded work: the memory a job's images will need, checked before any of them is decoded.

Measured on main before this module: `model.scale=[100000,100000]` ran for 56 s and was
killed by the kernel at 18.4 GB (exit 137, nothing on stderr); a 13000x13000 PNG drew with
10.2 GB. Now a job whose input, as fed, would need more memory than the machine has is
refused in one line before the first image is decoded or resized, saying what to lower.

What one image costs (`Budget.cost`), in bytes:

- its forward pass, by the pixels as fed to the model: the image's header size through
  the test pipeline's Resize (`fed_size`: mmcv's rules, keep_ratio or not; model.scale is
  set there), times the batch. A model's bytes per fed pixel are measured once per model
  (`probe`, cached): two forward passes on blank 32x32 and 64x64 images (larger ones if the
  model cannot run those), during which every tensor torch makes is counted while it lives
  (`LiveTensors`, a TorchDispatchMode). The bytes alive after each op are fitted as
  a*P + b*P^2 (P: pixels fed; b > 0 where a layer attends over all pixels, as NonLocal's
  does: 1407 bytes per pixel at 512x1024 where a linear fit says 559; the fit says 1407), or as
  c + a*P where something of a fixed size is alive too (pooled maps), and the estimate is the
  largest over the ops. Buffers that are no tensors (oneDNN's) and the heap's fragmentation
  are not counted: peak RSS over tracked bytes was measured 1.26 (ANN R50 at 512x1024), 1.37
  (demo PSPNet at 2048x4096), 1.6 and 2.0 (the demo at 512x1024 and 1024x2048: under 250 MB,
  freed tensors below glibc's 32 MB mmap threshold stay in the heap): RSS_PER_TENSOR_BYTE
  times the tensors plus up to HEAP_SLACK covers all four. Grad-CAM keeps every activation for its backward pass:
  for it the bytes made (not only alive) are fitted. The probe costs 0.07 s of CPU on the demo
  model, where its three demo images take 0.16-0.3 s;
- the layers featvis records: each is reduced in its hook, one at a time, from its output
  (the widest recorded layer's output, twice: a float copy and the reduction's work); with slide
  inference every recorded layer is also stitched at full size until the image is done;
- the image at full size: decoded twice (BGR for the model, RGB for the pictures, 6 bytes
  per pixel), the model's result resized to it (what is still alive after the probe's
  pass: mmseg keeps num_classes float logits and an int64 prediction per pixel), and the
  pictures (input, ground truth, prediction, one per map) at BYTES_PER_PICTURE each, plus
  the drawing's float maps (BYTES_DRAWING per pixel on each drawing thread); both measured on
  the demo model at 2048x4096 with 1, 6 and 30 maps (peak RSS 53, 71, 159 bytes per pixel);
- how many images are held at once: the decoder reads ahead (prefetch depth) and the drawer
  holds images being drawn and logged (drawer depth); `plan` lowers both from their
  defaults when the largest image would not fit them, and refuses images that do not fit
  even at depth 1 (alone, for a job of one image).

The memory available (`available`): /proc/meminfo's MemAvailable, the cgroup's limit less
its usage (v1 or v2), and `ulimit -v` less the process's address space, whichever is least;
`max_memory_gib` replaces it. On CUDA the forward pass is checked against the device's free
memory (torch.cuda.mem_get_info). A job is refused when its estimate is over MARGIN (90%) of
what is available: the rest is for what is not estimated (the W&B worker, Python's own objects).
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mmcv import rescale_size

from featvis.data.images import Problem, Sample
from featvis.engine.probe import Fit, LiveTensors, Probe, probe  # noqa: F401 (the plan's inputs, by these names)
from featvis.engine.room import GiB, Memory, available, available_device, gib  # noqa: F401
from featvis.errors import ConfigError

log = logging.getLogger(__name__)

MARGIN = 0.9  # a job may plan for 90% of the available memory
RSS_PER_TENSOR_BYTE = 1.3  # CPU: peak RSS over the tracked tensor bytes of a forward pass, above HEAP_SLACK
HEAP_SLACK = 128 << 20  # ... plus as much again, up to this: small freed tensors left in the heap (measured 2.0x)
DEVICE_PER_TENSOR_BYTE = 1.2  # CUDA: cuDNN's workspaces and the caching allocator's rounding (not measured here)
RECORD_FACTOR = 2.0  # a recorded layer's reduction: a float copy of its output and the reduction's work
BYTES_DECODED = 6  # per pixel: the image as BGR (the model's input) and RGB (the pictures')
BYTES_MASK = 14  # per pixel, with a mask: its labels (1-2 bytes) and the stray-label check's int64 copy
BYTES_PER_PICTURE = 4.0  # per pixel and picture: the RGB picture and its encoded file (measured 3.6-3.7)
BYTES_DRAWING = 16  # per pixel, on each drawing thread: the map aligned to full size as floats, its colours
BYTES_RESIZED = 3  # per fed pixel: the test pipeline's resized uint8 image (numpy, not a tensor)


# --------------------------------------------------------------------------------------------
# The pixels as fed


def fed_size(pipeline: Sequence[Any], size: Tuple[int, int]) -> Tuple[Tuple[int, int], Optional[str]]:
    """(height, width) of an image of `size` after the test pipeline's resizes, by mmcv's and mmseg's own
    rules; and the type of a resize it does not know (then the size is taken as it is), or None."""
    h, w = size
    unknown = None
    for transform in pipeline or []:
        kind = str(transform.get("type")) if isinstance(transform, Mapping) else ""
        if kind in ("Resize", "mmcv.Resize", "mmseg.Resize"):
            scale, factor = transform.get("scale"), transform.get("scale_factor")
            if isinstance(scale, int):
                scale = (scale, scale)
            if scale:
                scale = tuple(int(v) for v in scale)
            else:
                factor = (factor, factor) if isinstance(factor, (int, float)) else tuple(factor or (1.0, 1.0))
                scale = (int(w * float(factor[0]) + 0.5), int(h * float(factor[1]) + 0.5))  # mmcv's _scale_size
            if transform.get("keep_ratio", False):
                w, h = rescale_size((w, h), scale)
            else:
                w, h = scale
        elif kind == "ResizeShortestEdge":  # mmseg's: the short edge to `scale`, the long one at most max_size
            short = float(min(transform["scale"]) if isinstance(transform["scale"], (list, tuple))
                          else transform["scale"])
            ratio = short / min(h, w)
            new_h, new_w = (short, ratio * w) if h < w else (ratio * h, short)
            if max(new_h, new_w) > transform["max_size"]:
                shrink = transform["max_size"] / max(new_h, new_w)
                new_h, new_w = new_h * shrink, new_w * shrink
            h, w = int(new_h + 0.5), int(new_w + 0.5)
        elif "resize" in kind.lower():
            unknown = kind
    return (max(h, 1), max(w, 1)), unknown


# --------------------------------------------------------------------------------------------
# A job's budget


@dataclass(frozen=True)
class Cost:
    """One image's bytes, by what holds them."""

    size: Tuple[int, int]  # (height, width) on disk, as drawn
    fed: Tuple[int, int]  # (height, width) as fed to the model
    forward: float  # host bytes the forward pass takes on top of the decoded image (per image of a batch)
    device: float  # device bytes of the forward pass (CUDA; 0 on the CPU)
    decoded: float  # the decoded image (and mask)
    held: float  # from its forward until it is logged: decoded, the result at full size, the pictures
    retained: float  # of which the model's result (logits and prediction at full size)
    drawing: float  # while one drawing thread draws one of its pictures
    pictures: int


@dataclass(frozen=True)
class Plan:
    prefetch: int  # images decoded ahead (featvis.data.prefetch.Prefetch's depth)
    drawer: int  # images waiting to be drawn and logged (featvis.engine.drawer.Drawer's depth)
    need: float  # the estimate at these depths, in bytes


class Budget:
    """A job's memory estimate and the memory it may use (see the module's doc)."""

    def __init__(self, measured: Optional[Probe], *, pipeline: Sequence[Any], layers: Sequence[Any],
                 drawn: Sequence[Any], gradients: bool, slide: bool, host: Memory, device: Optional[Memory],
                 workers: int, holds_all: bool = False) -> None:
        """`layers`: what the recorder records (a sweep's other jobs' too, share_forward); `drawn`: the job's own;
        `holds_all`: the drawer keeps every image until the last is in (normalize.mode=shared)."""
        self.probe, self.pipeline, self.gradients, self.slide = measured, pipeline, gradients, slide
        self.holds_all = holds_all
        self.host, self.device, self.workers = host, device, max(1, workers)
        self.on_device = device is not None
        self.widest, self.stitched = self._recorded(layers)
        self.maps = self._maps(drawn)
        _, unknown = fed_size(pipeline, (1, 1))
        if unknown:
            log.info("the test pipeline's %s resizes images in a way featvis does not know: the memory estimate "
                     "takes each image as fed at its own size", unknown)

    def _calls(self, layer: Any) -> List[Tuple[float, int]]:
        return self.probe.outputs.get(getattr(layer, "module_name", str(layer)), []) if self.probe else []

    def _recorded(self, layers: Sequence[Any]) -> Tuple[float, float]:
        """Bytes per fed pixel of the widest recorded layer's output, and of all of them together."""
        sizes = [per_pixel for layer in layers for per_pixel, _ in self._calls(layer)]
        return max(sizes, default=0.0), sum(sizes)

    def _maps(self, layers: Sequence[Any]) -> int:
        """Maps drawn per image: one per call of each layer, and per tensor of a tuple output unless one is picked."""
        maps = 0
        for layer in layers:
            calls = self._calls(layer)
            maps += sum(1 if getattr(layer, "pick", ()) else n for _, n in calls) or 1
        return maps

    def cost(self, sample: Sample) -> Cost:
        h, w = sample.size
        (fh, fw), _ = fed_size(self.pipeline, (h, w))
        pixels, fed = float(h) * w, float(fh) * fw
        forward_host = device = retained = 0.0
        if self.probe is not None:
            fits = self.probe.made if self.gradients else self.probe.forward
            record = RECORD_FACTOR * self.widest * fed + (self.stitched * fed if self.slide else 0.0)
            for kind, fit in fits.items():
                if kind == "cpu":
                    tensors = fit(fed) + (0.0 if self.on_device else record)
                    forward_host += RSS_PER_TENSOR_BYTE * tensors + min(tensors, HEAP_SLACK)
                else:
                    device += DEVICE_PER_TENSOR_BYTE * (fit(fed) + record)
            retained = sum(self.probe.retained.values()) * max(pixels, fed)
        forward_host += BYTES_RESIZED * fed
        decoded = BYTES_DECODED * pixels + (BYTES_MASK * pixels if sample.mask_path is not None else 0.0)
        pictures = 2 + (sample.mask_path is not None) + self.maps
        held = decoded + retained + BYTES_PER_PICTURE * pixels * pictures
        return Cost((h, w), (fh, fw), forward_host, device, decoded, held, retained, BYTES_DRAWING * pixels, pictures)

    def need(self, main: Cost, other: Cost, images: int, batch: int, prefetch: int, drawer: int
             ) -> Tuple[float, float]:
        """Host and device bytes of a job of `images` images and these depths when `main` is one of the
        images held at its worst moment and every other image held costs `other`. The worst moment is
        (a) the model runs a batch while the drawer holds what it can and the decoder reads ahead, `main`
        in the batch or in the drawer, or (b) the job waits to hand the drawer an image, with the rest of
        its batch recorded."""
        w = self.workers
        b = min(batch, images)
        drawn = min(drawer + 1, images - b)
        ahead = min(prefetch + 1, images - b - drawn)
        rest = (drawn * other.held + ahead * other.decoded + min(w, drawn) * other.drawing)
        main_runs = main.forward + main.decoded + (b - 1) * (other.forward + other.decoded) + rest
        main_drawn = (b * (other.forward + other.decoded) + rest + main.held - other.held
                      + main.drawing - other.drawing) if drawn else 0.0
        held = min(drawer + 1 + b, images)
        waiting = (main.held + (held - 1) * other.held + min(prefetch + 1, images - held) * other.decoded
                   + main.drawing + (min(w, held) - 1) * other.drawing)
        device = main.device + (b - 1) * other.device
        return max(main_runs, main_drawn, waiting), device

    def fits(self, main: Cost, other: Cost, images: int, batch: int, prefetch: int, drawer: int) -> bool:
        host, device = self.need(main, other, images, batch, prefetch, drawer)
        return host <= MARGIN * self.host.bytes and (self.device is None or device <= MARGIN * self.device.bytes)

    def plan(self, samples: List[Sample], batch_size: int, prefetch: int, drawer: int
             ) -> Tuple[List[Sample], List[Problem], Plan]:
        """The samples the job can hold, those it cannot (Problems, one line each), and the depths.

        An image is refused when it does not fit alone (a job of one image) or, in a job of
        several, beside the largest other images at the fewest images featvis holds at once
        (depth 1). The depths are then lowered from the defaults until the largest image fits
        beside the next largest. A batch that does not fit where one image would, or a run that
        normalize.mode=shared cannot hold, is the config's error.
        """
        memo: Dict[Tuple[Tuple[int, int], bool], Cost] = {}  # a dataset's images mostly share a size
        costs: Dict[int, Cost] = {}
        for sample in samples:
            key = (sample.size, sample.mask_path is not None)
            if key not in memo:
                memo[key] = self.cost(sample)
            costs[id(sample)] = memo[key]
        order = sorted(samples, key=lambda s: -_weight(costs[id(s)]))
        refused: Dict[int, Problem] = {}
        largest_kept: Optional[Cost] = None
        for i, sample in enumerate(order):  # the largest first: what is refused is not held beside the others
            cost = costs[id(sample)]
            other = largest_kept or (costs[id(order[i + 1])] if i + 1 < len(order) else cost)
            images = len(samples) - len(refused)
            if self.fits(cost, other, images, 1, 1, 1):
                largest_kept = largest_kept or cost
            else:
                refused[id(sample)] = Problem(sample.image_path, self.refusal(sample, cost, other, images))
        kept = [s for s in samples if id(s) not in refused]
        problems = [refused[id(s)] for s in samples if id(s) in refused]
        if not kept:
            return kept, problems, Plan(prefetch, drawer, 0.0)
        ranked = heapq.nlargest(2, (costs[id(s)] for s in kept), key=_weight)
        largest, other = ranked[0], ranked[-1]
        images = len(kept)
        batch = min(batch_size, max(_same_size_runs(kept)))
        if batch > 1 and not self.fits(largest, other, images, batch, 1, 1):
            fitting = max([b for b in range(1, batch) if self.fits(largest, other, images, b, 1, 1)], default=1)
            host, device = self.need(largest, other, images, batch, 1, 1)
            on_device = self.device is not None and device > MARGIN * self.device.bytes
            raise ConfigError(f"batch_size={batch_size}: {batch} images of {largest.size[1]}x{largest.size[0]} "
                              f"(fed at {largest.fed[1]}x{largest.fed[0]}) need about "
                              f"{gib(device if on_device else host)} with one forward pass over them, over the "
                              f"{self._room(on_device)}: use batch_size={fitting} (or lower model.scale)")
        while not self.fits(largest, other, images, batch, prefetch, drawer) and (prefetch > 1 or drawer > 1):
            if drawer > 1:  # the drawer's images hold their pictures: the most to give back
                drawer -= 1
            else:
                prefetch -= 1
        host, _ = self.need(largest, other, images, batch, prefetch, drawer)
        if self.holds_all:  # normalize.mode=shared: every image and its result wait for the last one
            host += sum(costs[id(s)].decoded + costs[id(s)].retained for s in kept)
            if host > MARGIN * self.host.bytes:
                raise ConfigError(f"normalize.mode=shared keeps each image and the model's result at full size "
                                  f"until the last image is in: these {images} images need about {gib(host)}, "
                                  f"over the {self._room(False)}: use normalize.mode=percentile or per_map, or "
                                  "fewer images (max_images)")
        return kept, problems, Plan(prefetch, drawer, host)

    def _room(self, on_device: bool) -> str:
        memory = self.device if on_device and self.device is not None else self.host
        share = f"{MARGIN:.0%} of {gib(memory.bytes)}, {memory.source}"
        return f"{gib(MARGIN * memory.bytes)} featvis may use ({share})"

    def refusal(self, sample: Sample, cost: Cost, other: Cost, images: int) -> str:
        """One line: the image, what it would need and for what, what there is, and what to lower."""
        alone = not self.fits(cost, cost, 1, 1, 1, 1)
        host, device = self.need(cost, cost, 1, 1, 1, 1) if alone else self.need(cost, other, images, 1, 1, 1)
        on_device = self.device is not None and device > MARGIN * self.device.bytes
        h, w = cost.size
        fh, fw = cost.fed
        full = cost.held + cost.drawing
        forward = cost.device if on_device else cost.forward
        if forward >= full or on_device:
            what = f"its forward pass at {fw}x{fh} pixels: {gib(forward)}"
            if (fh, fw) == (h, w):  # fed as it is: no Resize in the test pipeline, or one to this very size
                fix = f"a smaller model.scale=[width,height], or max_image_pixels under {h * w:,} to skip such images"
            else:
                fix = "a smaller model.scale=[width,height]"
        else:
            maps = cost.pictures - 2 - (sample.mask_path is not None)
            what = f"{cost.pictures} pictures at full size and the model's result: {gib(full)}"
            fix = f"fewer layers (up to {maps} maps drawn), a downscaled image, or max_image_pixels under {h * w:,}"
        beside = ""
        if not alone:  # it fits alone: at depth 1 the job holds up to 3 images (drawn, handed over, running)
            beside = (f" beside the {min(images, 3) - 1} other image(s) featvis holds at once (up to "
                      f"{other.size[1]}x{other.size[0]})")
            fix = "run it in a job of its own, " + fix
        return (f"image {sample.image_path} ({w}x{h}) needs about {gib(device if on_device else host)} of memory"
                f"{beside} ({what}), over the {self._room(on_device)}: use {fix}; max_memory_gib=<GiB> "
                "overrides the estimate")


def _weight(cost: Cost) -> float:
    return cost.forward + cost.held + cost.drawing + cost.device


def _same_size_runs(samples: Sequence[Sample]) -> List[int]:
    """The lengths of runs of consecutive samples of one size (what featvis.data.batches can batch)."""
    runs: List[int] = []
    last = None
    for sample in samples:
        if runs and sample.size == last:
            runs[-1] += 1
        else:
            runs.append(1)
        last = sample.size
    return runs or [1]
