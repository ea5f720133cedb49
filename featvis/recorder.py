"""Forward hooks that record what chosen layers output, reduced on the spot.

    with FeatureRecorder(layers, reduce_fn) as recorder:
        model(...)
        maps = recorder.pop()     # {sub-name: [Reduced per batch item]}, in the user's order

- Each output is reduced inside the hook (see reductions), so the memory kept per
  layer is K x H x W whatever the channel count.
- Tuple, list and dict outputs are not indexed with [0]: every tensor element is
  recorded under its own sub-name, `name[i]` or `name:key`.
- The batch dimension is kept: one reduced map per batch item.
- A module called several times in one forward records every call (`name#2`, ...).
- Hooks are removed on every exit path, exceptions and KeyboardInterrupt included.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from featvis.reductions import Reduced

log = logging.getLogger(__name__)

ReduceFn = Callable[[torch.Tensor], Reduced]


class FeatureRecorder:
    def __init__(self, layers: Sequence[Tuple[str, nn.Module]], reduce_fn: ReduceFn) -> None:
        self.layers = list(layers)
        self.reduce_fn = reduce_fn
        self._handles: List[torch.utils.hooks.RemovableHandle] = []
        self._records: Dict[str, Dict[str, List[Reduced]]] = {}
        self._calls: Dict[str, int] = {}
        self.skipped: Dict[str, str] = {}  # sub-name -> why it was not recorded

    def __enter__(self) -> "FeatureRecorder":
        try:
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def pop(self) -> Dict[str, List[Reduced]]:
        """Everything recorded since the last pop, layers in the user's order."""
        out: Dict[str, List[Reduced]] = {}
        for name, _ in self.layers:
            out.update(self._records.get(name, {}))
        self._records.clear()
        self._calls.clear()
        return out

    def _hook_for(self, layer: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            call = self._calls.get(layer, 0) + 1
            self._calls[layer] = call
            name = layer if call == 1 else f"{layer}#{call}"
            self._record(layer, name, output)
        return hook

    def _record(self, layer: str, name: str, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            if output.dim() == 4:  # (B, C, H, W): one map per batch item
                maps = [self.reduce_fn(item) for item in output]
                self._records.setdefault(layer, {})[name] = maps
            else:
                self._skip(name, f"output of shape {tuple(output.shape)} is not a (B, C, H, W) map")
        elif isinstance(output, (tuple, list)):
            for i, item in enumerate(output):
                self._record(layer, f"{name}[{i}]", item)
        elif isinstance(output, dict):
            for key, item in output.items():
                self._record(layer, f"{name}:{key}", item)
        else:
            self._skip(name, f"output of type {type(output).__name__} holds no tensor")

    def _skip(self, name: str, why: str) -> None:
        if name not in self.skipped:
            self.skipped[name] = why
            log.warning("layer %s is not drawn: %s", name, why)
