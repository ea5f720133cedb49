"""The one way featvis reads what a hooked layer gave: its calls' names and its output's tensors.

The recorder (featvis.record.recorder) and Grad-CAM (featvis.record.gradcam) both take a layer's
output through here, so their maps have the same names:

- a module called several times in one forward is `name`, `name#2`, ... (`Calls`);
- an output that is a tuple, list or dict gives every tensor in it, `name[i]` and `name:key`
  (`tensors`); what holds no tensor is said, not dropped silently;
- the values token_grid may read a (B, N, C) output's (H, W) from: the hook's arguments and
  the output's own tuple items (`hints`).
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch


class Calls:
    """Counts a layer's calls within one forward pass (per `key`: a slide window) and names them."""

    def __init__(self) -> None:
        self._count: Dict[Hashable, int] = {}

    def name(self, layer: str, key: Hashable = None) -> str:
        call = self._count.get((layer, key), 0) + 1
        self._count[(layer, key)] = call
        return layer if call == 1 else f"{layer}#{call}"

    def ran(self, layer: str) -> bool:
        return any(name == layer for name, _ in self._count)

    def clear(self) -> None:
        self._count.clear()


def tensors(value: Any, name: str) -> Iterator[Tuple[str, Optional[torch.Tensor], Optional[str]]]:
    """(sub-name, tensor, None) for every tensor of `value`, in order; (sub-name, None, why) for what holds none."""
    if isinstance(value, torch.Tensor):
        yield name, value, None
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from tensors(item, f"{name}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{name}:{key}")
    else:
        yield name, None, f"output of type {type(value).__name__} holds no tensor"


def hints(args: Sequence[Any], output: Any, kwargs: Optional[Mapping[str, Any]] = None) -> List[Any]:
    """What token_grid may read a token output's (H, W) from: the arguments, then the output's tuple items."""
    return [*args, *(kwargs or {}).values(), *(output if isinstance(output, (tuple, list)) else ())]
