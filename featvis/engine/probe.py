"""What a model takes per pixel fed, measured: tiny forward passes that count every live tensor.

Two forward passes on blank 32x32 and 64x64 images (larger ones if the model cannot run
those), during which every tensor torch makes is counted while it lives (`LiveTensors`, a
TorchDispatchMode); the bytes alive after each op are fitted as a*P + b*P^2 (P: pixels fed),
or c + a*P (`Fit`). featvis.engine.budget turns a `Probe` into each image's estimate.
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger("featvis.engine.budget")  # the budget's log lines, as before the split

PROBE_SIDES = ((32, 64), (64, 128), (128, 256))  # probe image sides, tried in turn (a model may need larger inputs)


class LiveTensors(TorchDispatchMode):
    """Counts the bytes of the tensors torch makes while it is on (per device kind), as long as they live.

    After each op, `trace[kind]` gets the bytes alive then and `made[kind]` the bytes made so far.
    A storage is counted once whatever views share it, and uncounted when the last tensor
    seen holding it is freed (a weakref finalizer).
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: TorchDispatchMode would wrap __torch_dispatch__ in torch._dynamo.disable, whose first call
        imports torch._dynamo (0.9 s and 33 MB on this CPU: three times the demo job's three forward passes).
        featvis compiles nothing, so there is nothing for dynamo to skip."""
        return False

    def __init__(self) -> None:
        super().__init__()
        self._refs: Dict[Tuple[str, int], List[int]] = {}  # (device kind, data_ptr) -> [tensors seen, bytes]
        self.live: Dict[str, int] = {}
        self.made: Dict[str, int] = {}
        self.trace: Dict[str, List[int]] = {}
        self.made_trace: Dict[str, List[int]] = {}

    def _drop(self, key: Tuple[str, int]) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self._refs[key]
            self.live[key[0]] -= entry[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(tensor, torch.Tensor):
                continue
            try:
                storage = tensor.untyped_storage()
                key, size = (tensor.device.type, storage.data_ptr()), storage.nbytes()
            except (RuntimeError, NotImplementedError):  # a tensor without storage (sparse, meta)
                continue
            if size == 0:
                continue
            entry = self._refs.get(key)
            if entry is None:
                self._refs[key] = [1, size]
                self.live[key[0]] = self.live.get(key[0], 0) + size
                self.made[key[0]] = self.made.get(key[0], 0) + size
            else:
                entry[0] += 1
            weakref.finalize(tensor, self._drop, key)
        for kind in set(self.trace) | set(self.live):
            self.trace.setdefault(kind, []).append(self.live.get(kind, 0))
            self.made_trace.setdefault(kind, []).append(self.made.get(kind, 0))
        return out


@dataclass
class Fit:
    """Bytes as a function of the pixels fed, P: the largest over ops of c + a*P + b*P^2."""

    c: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __call__(self, pixels: float) -> float:
        if not len(self.a):
            return 0.0
        return float(np.max(self.c + self.a * pixels + self.b * pixels * pixels))

    @classmethod
    def of(cls, p1: float, trace1: Sequence[int], p2: float, trace2: Sequence[int]) -> "Fit":
        """Each op's bytes at p1 and p2 (p2 > p1): growing at least as fast as the pixels, as a*P + b*P^2;
        slower (something of a fixed size is alive too: pooled maps), as c + a*P. Every term >= 0, and the
        fit goes through both points. Passes whose ops differ (data-dependent control flow) are fitted by
        their largest values only."""
        if len(trace1) != len(trace2) or not trace1:
            trace1, trace2 = [max(trace1, default=0)], [max(trace2, default=0)]
        l1, l2 = np.asarray(trace1, float), np.asarray(trace2, float)
        b = (l2 / p2 - l1 / p1) / (p2 - p1)
        grows = b >= 0
        a_grows = np.maximum(l1 / p1 - b * p1, 0.0)
        b = np.where(grows, np.maximum(b, (l2 - a_grows * p2) / (p2 * p2)), 0.0)
        slope = np.maximum((l2 - l1) / (p2 - p1), 0.0)
        a = np.where(grows, a_grows, slope)
        c = np.where(grows, 0.0, np.maximum(l1, l2) - slope * np.where(l2 >= l1, p2, p1))
        return cls(np.maximum(c, 0.0), a, np.maximum(b, 0.0))


@dataclass
class Probe:
    """What a model's forward pass takes, per pixel fed (measured by `probe`)."""

    forward: Dict[str, Fit]  # device kind -> bytes alive at the peak
    made: Dict[str, Fit]  # device kind -> bytes made in the pass (what a backward pass keeps)
    retained: Dict[str, float]  # device kind -> bytes per pixel still alive with the result (logits at full size)
    outputs: Dict[str, List[Tuple[float, int]]]  # module -> per call: (output bytes per fed pixel, its tensors)
    seconds: float


_PROBES: "weakref.WeakKeyDictionary[torch.nn.Module, Optional[Probe]]" = weakref.WeakKeyDictionary()


def probe(model: torch.nn.Module) -> Optional[Probe]:
    """The model's `Probe`, measured on its first use in this process; None when no probe size runs."""
    if model in _PROBES:
        return _PROBES[model]
    started = time.perf_counter()
    found, failure = None, None
    for sides in PROBE_SIDES:
        try:
            runs = [_probe_once(model, side) for side in sides]
        except Exception as err:  # noqa: BLE001 - a model the probe cannot run: the real pass will say why
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            continue
        (p1, one), (p2, two) = runs
        kinds = set(one.trace) | set(two.trace)
        found = Probe(
            forward={k: Fit.of(p1, one.trace.get(k, []), p2, two.trace.get(k, [])) for k in kinds},
            made={k: Fit.of(p1, one.made_trace.get(k, []), p2, two.made_trace.get(k, [])) for k in kinds},
            retained={k: max(one.kept.get(k, 0) / p1, two.kept.get(k, 0) / p2) for k in kinds},
            outputs={name: [(max(b1 / p1, b2 / p2), n) for (b1, n), (b2, _) in zip(calls, two.outputs.get(name, []))]
                     for name, calls in one.outputs.items()},
            seconds=time.perf_counter() - started)
        peak = sum(fit(p2) for fit in found.forward.values())
        log.info("memory probe of the model (forward passes at %s): %.0f tensor bytes per pixel fed at %d pixels "
                 "(%.2f s)", " and ".join(f"{s}x{s}" for s in sides), peak / p2, p2, found.seconds)
        break
    if found is None:
        log.warning("memory probe of the model failed (%s): the forward pass's memory is not estimated", failure)
    _PROBES[model] = found
    return found


@dataclass
class _Run:
    trace: Dict[str, List[int]]
    made_trace: Dict[str, List[int]]
    kept: Dict[str, int]
    outputs: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)


def _probe_once(model: torch.nn.Module, side: int) -> Tuple[int, _Run]:
    """One forward pass of mmseg's inference_model on a blank side x side image, fed at that size; the pixels
    fed and what was counted. The test pipeline's Resize is set to the image's size on a copy of it."""
    from mmseg.apis import inference_model  # noqa: PLC0415 - mmseg's heavy import, where it is needed

    cfg = model.cfg
    saved = cfg.test_pipeline
    pipeline = copy.deepcopy(saved)
    for transform in pipeline:
        kind = transform.get("type") if isinstance(transform, Mapping) else None
        if kind == "Resize":
            transform["scale"], transform["scale_factor"] = (side, side), None
        elif kind == "ResizeShortestEdge":
            transform["scale"], transform["max_size"] = side, side
    outputs: Dict[str, List[Tuple[int, int]]] = {}
    handles = [module.register_forward_hook(_output_noter(outputs, name))
               for name, module in model.named_modules() if name]
    counter = LiveTensors()
    cfg.test_pipeline = pipeline
    try:
        with counter:
            result = inference_model(model, np.zeros((side, side, 3), np.uint8))
        kept = dict(counter.live)  # the result (logits and prediction at the image's size) is still alive
        height, width = result.metainfo.get("img_shape", (side, side))[:2]
        del result
    finally:
        cfg.test_pipeline = saved
        for handle in handles:
            handle.remove()
    return int(height) * int(width), _Run(counter.trace, counter.made_trace, kept, outputs)


def _output_noter(outputs: Dict[str, List[Tuple[int, int]]], name: str) -> Callable[..., None]:
    """A forward hook noting the bytes of a module's output maps (tokens or more dimensions) and how many."""
    def note(module: torch.nn.Module, args: Any, output: Any) -> None:
        tensors = [t for t in _tensors(output) if t.dim() >= 3]
        if tensors:
            outputs.setdefault(name, []).append((sum(t.numel() * t.element_size() for t in tensors), len(tensors)))
    return note


def _tensors(value: Any) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    return []
