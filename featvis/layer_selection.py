"""Layer names and glob patterns -> the model's modules, in the order the user gave.

Names are matched against `model.named_modules()`: never `eval`, never attribute
chains. A glob (`backbone.layer*`) expands to its matches in module order; a module
named twice is kept at its first place. A name or pattern that matches nothing
fails with the closest module names.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Dict, List, Sequence, Tuple

from torch import nn

from featvis.errors import LayerNotFoundError

_GLOB_CHARS = set("*?[")


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def select_layers(model: nn.Module, patterns: Sequence[str]) -> List[Tuple[str, nn.Module]]:
    """Resolve `patterns` to (name, module) pairs, keeping the user's order."""
    modules: Dict[str, nn.Module] = {name: m for name, m in model.named_modules() if name}
    chosen: Dict[str, nn.Module] = {}
    for pattern in patterns:
        if pattern in modules:
            matches = [pattern]
        elif is_glob(pattern):
            matches = fnmatch.filter(modules, pattern)
        else:
            matches = []
        if not matches:
            raise LayerNotFoundError(_not_found(pattern, list(modules)))
        for name in matches:
            chosen.setdefault(name, modules[name])
    return list(chosen.items())


def _not_found(pattern: str, names: List[str]) -> str:
    close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.4)
    if not close:  # a pattern far from any name: show where the top-level modules are
        close = sorted({n.split(".")[0] for n in names})[:5]
    what = "pattern" if is_glob(pattern) else "layer"
    return f"{what} {pattern!r} matches no module of the model; closest: {', '.join(close)}; fix layers.names"
