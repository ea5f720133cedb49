"""Forward hooks that record what chosen layers output, reduced on the spot.

    with FeatureRecorder(selected, reduce_fn, watch=model.backbone, root=model) as recorder:
        model(...)
        maps = recorder.pop()     # {sub-name: [Reduced per batch item]}, in the user's order

- Each output is reduced inside the hook (see reductions), so the memory kept per
  layer is K x H x W whatever the channel count.
- Tuple, list and dict outputs are not indexed with [0]: without a pick
  (`name[i]`, `name:key`), every tensor element is recorded under its own sub-name.
- The batch dimension is kept: one reduced map per batch item.
- Transformer tokens (B, N, C) are turned into maps (see tokens); `watch` is the module
  whose input tells the image's aspect ratio when no `hw_shape` is passed along.
- A module called several times in one forward records every call (`name#2`, ...),
  except that under slide inference (`root.test_cfg.mode == 'slide'`) the calls of
  successive windows are stitched into one map of the whole image (see slide).
- A `/input` layer records what enters the module (a forward pre-hook on its positional input).
- Layers from a preset (`Selected.optional`) are drawn in the order they run; one that
  does not run, or gives no map, is left out quietly (the user's own layers are
  reported), and a classifier input that is the very tensor a drawn part gave is not
  drawn twice. `ran` names every layer that ran, for the job's "never ran" check.
- Each map carries its stride: how many input pixels one map pixel spans (1/4, 1/8, ...).
- With `sketch_points` (featvis.compare.sketch.positions), each map also carries its full
  C-dimensional features at those points (`Reduced.sketch`), taken before the reduction;
  without them nothing is sampled.
- Auxiliary heads, which mmseg runs only in training, are run on the decode head's
  input when a layer of theirs is recorded (featvis.record.auxiliary).
- Hooks are removed on every exit path, exceptions and KeyboardInterrupt included.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import nn

from featvis.errors import LayerNotFoundError
from featvis.record import capture
from featvis.record.auxiliary import AuxiliaryRun
from featvis.record.hooks import HookSet
from featvis.record.layers import Pick, Selected, format_pick
from featvis.record.recorded import Reduced
from featvis.record.sampling import sample
from featvis.record.slide import Stitcher, Window, slide_windows
from featvis.record.tokens import token_grid, tokens_to_map

log = logging.getLogger(__name__)

ReduceFn = Callable[..., Reduced]  # (feat (C, H, W), layer=<sub-name>) -> Reduced


class FeatureRecorder(HookSet):
    def __init__(self, layers: Sequence[Selected], reduce_fn: ReduceFn,
                 watch: Optional[nn.Module] = None, root: Optional[nn.Module] = None,
                 quiet: Sequence[str] = (), sketch_points: Optional[np.ndarray] = None) -> None:
        super().__init__()
        self.sketch_points = sketch_points  # P x 2 normalized (y, x): sample each map's features there
        self.layers = list(layers)
        self.quiet = set(quiet)  # layer names recorded for other jobs: their problems are theirs to report
        self.reduce_fn = reduce_fn
        self.watch = watch  # the backbone: its input is the image, or the current slide window
        self.root = root  # the segmentor: its input is the whole image
        self.slide = slide_windows(root) if root is not None else None
        self._records: Dict[str, Dict[str, List[Reduced]]] = {}
        self._stitchers: Dict[str, Dict[str, Stitcher]] = {}
        self._calls = capture.Calls()  # name, name#2: per layer and slide window, within one forward
        self._aspect: Optional[float] = None  # height / width of what `watch` last saw
        self._input_hw: Tuple[int, int] = (0, 0)
        self._windows: List[Window] = []  # this forward's slide windows
        self._window = -1  # the window the model is in: one per call of `watch`
        self.skipped: Dict[str, Dict[str, str]] = {}  # layer name -> {sub-name: why it was not recorded}
        self.ran: Set[str] = set()  # layer names whose module was called, since the recorder was made
        self._order: Dict[str, int] = {}  # layer name -> its first call in this forward
        # (data_ptr, shape) of each tensor recorded in this forward -> (a weak reference to it, layer, sub-name):
        # the reference tells a tensor still alive from a freed one whose memory a new tensor reuses
        self._tensors: Dict[Tuple[int, Tuple[int, ...]], Tuple[Any, str, str]] = {}
        self._window_hw: Tuple[int, int] = (0, 0)  # what `watch` last saw: the image, or a slide window
        self._batch = 0  # images in the segmentor's input

    def register(self) -> None:
        if self.root is not None:
            self.add(self.root.register_forward_pre_hook(self._start_forward, with_kwargs=True))
            if any(layer.module_name.startswith("auxiliary_head") for layer in self.layers):
                AuxiliaryRun.attach(self, self.root)
        if self.watch is not None:
            self.add(self.watch.register_forward_pre_hook(self._see_input))
        for layer in self.layers:
            if layer.port == "input":
                self.add(layer.module.register_forward_pre_hook(self._hook_for(layer), with_kwargs=True))
            else:
                self.add(layer.module.register_forward_hook(self._hook_for(layer), with_kwargs=True))

    def pop(self) -> Dict[str, List[Reduced]]:
        """Everything recorded since the last pop, by sub-name, layers in the user's order."""
        return flatten(self.pop_layers())

    def pop_layers(self) -> Dict[str, Dict[str, List[Reduced]]]:
        """Everything recorded since the last pop: {layer name: {sub-name: [Reduced]}}, in the user's order."""
        out: Dict[str, Dict[str, List[Reduced]]] = {}
        layers = self.layers
        if any(layer.optional for layer in layers):  # a preset's layers: in the order they ran
            never = len(self._order)
            layers = sorted(layers, key=lambda layer: self._order.get(layer.name, never))
        for layer in layers:  # a preset's layer that does not run on this model: an empty entry, last
            subs = out.setdefault(layer.name, dict(self._records.get(layer.name, {})))
            for name, stitcher in self._stitchers.get(layer.name, {}).items():
                subs[name] = [self._reduce(item, name, stitcher.note, stitched=True)
                              for item in stitcher.result()]
        self._records.clear()
        self._stitchers.clear()
        self._calls.clear()
        self._order.clear()
        self._tensors.clear()
        self._windows, self._window = [], -1
        return out

    def _reduce(self, feat: torch.Tensor, name: str, note: Optional[str] = None, stitched: bool = False) -> Reduced:
        """Reduce one (C, H, W) map and attach the activation statistics of the full map (and the
        stitcher's note, slide.PER_WINDOW_NOTE, before the reduction's own) and, with sketch_points, its sketch."""
        reduced = self.reduce_fn(feat, layer=name)
        reduced.stats = activation_stats(feat)
        reduced.stride = stride(self._input_hw if stitched else self._window_hw, feat.shape[-2:])
        if self.sketch_points is not None:
            reduced.sketch = sample(feat, self.sketch_points)
        if note:
            reduced.note = f"{note} | {reduced.note}" if reduced.note else note
        return reduced

    def _start_forward(self, module: nn.Module, args: Any, kwargs: Dict[str, Any]) -> None:
        """The segmentor is called on the whole image: lay out this forward's slide windows."""
        x = kwargs.get("inputs", args[0] if args else None)
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            self._input_hw = self._window_hw = (x.shape[-2], x.shape[-1])
            self._batch = x.shape[0]
            if self.slide is not None:
                self._windows, self._window = self.slide.windows(*self._input_hw), -1

    def _see_input(self, module: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[-1] > 0:
            self._aspect = x.shape[-2] / x.shape[-1]
            self._window_hw = (x.shape[-2], x.shape[-1])
            self._window += 1  # under slide inference the backbone runs once per window

    def _current_window(self) -> Optional[Window]:
        return self._windows[self._window] if 0 <= self._window < len(self._windows) else None

    def _hook_for(self, layer: Selected) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, kwargs: Dict[str, Any], output: Any = None) -> None:
            if layer.port == "input":  # a pre-hook: what enters the module
                output = args[0] if len(args) == 1 else tuple(args)
            self.ran.add(layer.name)
            self._order.setdefault(layer.name, len(self._order))
            name = self._calls.name(layer.name, self._window if self._current_window() else None)
            picked = pick_output(output, layer.pick, layer.module_name)
            same = self._tensors.get(_key(picked)) if layer.optional and layer.port == "input" else None
            if same is not None and same[0]() is not None:  # the very tensor a drawn layer gave, still alive
                self._same_as(name, same[1], same[2])
                return
            for sub, tensor, why in capture.tensors(picked, name):
                if tensor is None:
                    self._skip(layer.name, sub, layer.optional, why)
                else:
                    self._record(layer.name, sub, tensor, capture.hints(args, output, kwargs), quiet=layer.optional)
        return hook

    def _record(self, layer: str, name: str, output: torch.Tensor, hints: List[Any], quiet: bool = False) -> None:
        """One tensor of a layer's output: a (B, C, H, W) map, or (B, N, C) tokens made into one."""
        self._tensors[_key(output)] = (weakref.ref(output), layer, name)
        if output.dim() == 3:  # (B, N, C) tokens
            grid = token_grid(output.shape[1], hints, self._aspect)
            if grid is not None and quiet and not plausible_grid(grid, output.shape[1], hints, self._window_hw):
                log.debug("%s: %d tokens are no image grid (queries?): not drawn", name, output.shape[1])
                return
            if grid is None:
                self._skip(layer, name, quiet, f"cannot tell the (H, W) grid of its {output.shape[1]} tokens "
                           f"(output {tuple(output.shape)}): no hw_shape is passed along and no "
                           "factorisation matches the image's aspect ratio")
                return
            output = tokens_to_map(output, grid)
        window = self._current_window()
        if quiet and output.dim() == 4 and self._batch and output.shape[0] != self._batch:
            log.debug("%s: output %s is no batch of maps (stacked queries?): not drawn", name, tuple(output.shape))
            return
        if output.dim() == 4 and window is not None:  # a slide window: stitch, reduce in pop()
            stitchers = self._stitchers.setdefault(layer, {})
            stitchers.setdefault(name, Stitcher(self._input_hw)).add(output.detach(), window)
        elif output.dim() == 4:  # (B, C, H, W): one map per batch item
            self._records.setdefault(layer, {})[name] = [self._reduce(item, name) for item in output]
        else:
            self._skip(layer, name, quiet, f"output of shape {tuple(output.shape)} is not a (B, C, H, W) map "
                       "or (B, N, C) tokens")

    def _same_as(self, name: str, layer: str, sub: str) -> None:
        """`name` (a classifier's input) is the tensor `sub` gave: not drawn twice; `sub`'s caption says so."""
        log.debug("%s is the tensor %s gave: drawn once, as %s", name, sub, sub)
        note = f"also {name}"
        for reduced in self._records.get(layer, {}).get(sub, []):  # a slide window's map is reduced later
            reduced.note = f"{reduced.note} | {note}" if reduced.note else note

    def _skip(self, layer: str, name: str, quiet: bool, why: str) -> None:
        subs = self.skipped.setdefault(layer, {})
        if name not in subs:
            subs[name] = why
            if layer not in self.quiet:
                log.log(logging.DEBUG if quiet else logging.WARNING, "layer %s is not drawn: %s", name, why)


def _key(value: Any) -> Tuple[int, Tuple[int, ...]]:
    """What tells one tensor from another within a forward pass: its storage and its shape."""
    return (value.data_ptr(), tuple(value.shape)) if isinstance(value, torch.Tensor) else (0, ())


def plausible_grid(grid: Tuple[int, int], n: int, hints: List[Any], input_hw: Tuple[int, int]) -> bool:
    """Whether tokens guessed to lie on `grid` from the aspect ratio alone (no hw_shape passed along)
    make a map at a power-of-two stride of the input (1/4 ... 1/64), as patch and stage outputs do;
    a head's 100 queries on a 10 x 10 "grid" do not."""
    if token_grid(n, hints, None) is not None or not input_hw[0]:
        return True  # the module was told its grid
    ratio = input_hw[0] / grid[0]
    return any(abs(ratio - s) <= 0.15 * s for s in (2, 4, 8, 16, 32, 64))


def stride(input_hw: Tuple[int, int], map_hw: Sequence[int]) -> Optional[float]:
    """Input pixels per map pixel (8.0 for a 1/8 map); None when the sizes do not tell one."""
    if not input_hw[0] or not map_hw[0] or not map_hw[-1]:
        return None
    return input_hw[0] / map_hw[0]


def flatten(by_layer: Dict[str, Dict[str, List[Reduced]]], names: Optional[Sequence[str]] = None
            ) -> Dict[str, List[Reduced]]:
    """{layer: {sub-name: maps}} -> {sub-name: maps}, for `names` (default: every layer) in that order."""
    out: Dict[str, List[Reduced]] = {}
    for name in (by_layer if names is None else names):
        out.update(by_layer.get(name, {}))
    return out


def activation_stats(feat: torch.Tensor) -> Dict[str, float]:
    """mean, std (population), fraction of exact zeros and max of a whole (C, H, W) map, as floats.

    Computed in float32 on the map's device with one transfer to the CPU; NaN/Inf propagate.
    Every layer of a sweep's union pays this, so it avoids full-size temporaries: the zeros
    are counted on a bool view (4x less memory traffic than comparing floats), the variance
    is torch's two-pass one (accurate when the mean is large against the spread).
    """
    x = feat.detach().float()
    if x.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "zero_fraction": float("nan"), "max": float("nan")}
    nonzero = x.bool().count_nonzero()  # NaN counts as nonzero, as `x == 0` is False for it
    values = torch.stack([x.mean(), x.var(correction=0).sqrt(), 1 - nonzero / x.numel(), x.amax()]).tolist()
    return dict(zip(("mean", "std", "zero_fraction", "max"), values))


def pick_output(output: Any, pick: Pick, module_name: str) -> Any:
    """Follow `pick` ([i] and :key steps) into a module's output."""
    for depth, step in enumerate(pick):
        where = module_name + format_pick(pick[:depth])
        if isinstance(step, int):
            if not isinstance(output, (tuple, list)) or step >= len(output):
                what = f"a {type(output).__name__} of {len(output)}" if isinstance(output, (tuple, list)) \
                    else f"a {type(output).__name__}"
                raise LayerNotFoundError(f"layer {where}[{step}]: the output of {where} is {what}; "
                                         "pick an existing element")
        elif not isinstance(output, dict) or step not in output:
            keys = ", ".join(map(str, output)) if isinstance(output, dict) else f"a {type(output).__name__}"
            raise LayerNotFoundError(f"layer {where}:{step}: the output of {where} has no key {step!r} "
                                     f"(it holds {keys})")
        output = output[step]
    return output
