"""Layer specs -> the model's modules, in the order the user gave.

A spec is one of (and combinations of the last three):

    decode_head.conv_seg        an exact module name (as in `model.named_modules()`)
    backbone.layer*             a glob; expands to its matches in module order
    decode_head.*@ConvModule    a glob and a type: matching modules of that class (or a subclass)
    @Conv2d                     every module of a type
    backbone[2]                 one element of a tuple or list output
    decode_head:key             one entry of a dict output
    decode_head.conv_seg/input  what enters a module (its positional input) instead of what leaves it

Names are matched against `named_modules()`: never `eval`, never attribute chains.
A spec matched twice is kept at its first place. A spec that matches nothing fails
with the closest module (or type) names, and so does a container that never runs
(a ModuleList: its elements run). A trailing `[i]` is always a pick, so glob
character classes are not supported (use `?`).

Layers from a preset (featvis.record.presets) are *optional*: the recorder leaves out
one that does not run, where a layer the user named is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

from torch import nn

from featvis.errors import LayerNotFoundError

Pick = Tuple[Union[int, str], ...]
_SPEC = re.compile(r"^(?P<pattern>[^@\[:]*)(?:@(?P<type>[A-Za-z_]\w*))?(?P<pick>(?:\[\d+\]|:[^\[\]:@]+)*)$")
_PICK = re.compile(r"\[(\d+)\]|:([^\[\]:@]+)")


INPUT = "/input"


@dataclass(frozen=True)
class Selected:
    module_name: str
    module: nn.Module
    pick: Pick = ()
    port: str = "output"  # output: what the module returns; input: its positional input (`/input`)
    optional: bool = False  # from a preset: left out when it does not run, not an error

    @property
    def name(self) -> str:
        """How the layer is named in pictures: `backbone[2]`, `decode_head:key`, `head.conv_seg/input`."""
        return self.module_name + (INPUT if self.port == "input" else "") + format_pick(self.pick)


def format_pick(pick: Pick) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f":{p}" for p in pick)


def is_glob(pattern: str) -> bool:
    return any(c in "*?" for c in pattern)


def type_names(module: nn.Module) -> List[str]:
    """The class names a module answers to: its class and every base class."""
    return [cls.__name__ for cls in type(module).__mro__]


def parse_spec(spec: str) -> Tuple[str, str, Pick]:
    """`decode_head.*@ConvModule` -> ('decode_head.*', 'ConvModule', ()); see split_port for `/input`."""
    match = _SPEC.match(split_port(spec)[0].strip())
    if not match or not (match["pattern"] or match["type"]):
        raise LayerNotFoundError(f"cannot read layer {spec!r}: write a module name, a glob, glob@Type, "
                                 "name[i] or name:key (e.g. decode_head.*@ConvModule, backbone[2])")
    pick = tuple(int(i) if i else key for i, key in _PICK.findall(match["pick"]))
    return match["pattern"] or "*", match["type"] or "", pick


def split_port(spec: str) -> Tuple[str, str]:
    """`head.conv_seg/input[0]` -> ('head.conv_seg[0]', 'input'); any other spec -> (spec, 'output')."""
    head, sep, tail = spec.partition(INPUT)
    if not sep:
        return spec, "output"
    if tail and not re.fullmatch(r"(?:\[\d+\]|:[^\[\]:@]+)*", tail):
        raise LayerNotFoundError(f"cannot read layer {spec!r}: /input ends a module name, optionally followed "
                                 "by a pick (e.g. decode_head.conv_seg/input)")
    return head + tail, "input"


def select_layers(model: nn.Module, specs: Sequence[str], optional: bool = False) -> List[Selected]:
    """Resolve `specs` to the selected modules (and output picks), keeping the user's order.

    `optional`: the specs come from a preset (the recorder leaves out what does not run).
    """
    modules: Dict[str, nn.Module] = {name: m for name, m in model.named_modules() if name}
    chosen: Dict[Tuple[str, str, Pick], Selected] = {}
    for spec in specs:
        port = split_port(spec)[1]
        pattern, type_name, pick = parse_spec(spec)
        if pattern in modules:
            names = [pattern]
        elif is_glob(pattern):
            names = fnmatch.filter(modules, pattern)
        else:
            names = []
        if not names:
            raise LayerNotFoundError(_not_found(spec, pattern, list(modules)))
        if type_name:
            typed = [n for n in names if type_name in type_names(modules[n])]
            if not typed:
                raise LayerNotFoundError(_wrong_type(spec, type_name, [modules[n] for n in names]))
            names = typed
        if not optional and not is_glob(pattern) and not type_name and never_runs(modules[names[0]]):
            raise LayerNotFoundError(_container(spec, names[0], list(modules)))
        for name in names:
            if is_glob(pattern) and never_runs(modules[name]):
                continue  # a glob over containers: their elements, also matched, are what runs
            chosen.setdefault((name, port, pick), Selected(name, modules[name], pick, port, optional))
    return list(chosen.values())


def never_runs(module: nn.Module) -> bool:
    """A ModuleList or ModuleDict without a forward of its own: only its elements are ever called."""
    for container in (nn.ModuleList, nn.ModuleDict):
        if isinstance(module, container):
            return type(module).forward is container.forward
    return False


def _container(spec: str, name: str, names: List[str]) -> str:
    elements = [n for n in names if n.startswith(name + ".") and n.count(".") == name.count(".") + 1]
    shown = " ".join(elements[:3]) + (" ..." if len(elements) > 3 else "")
    return (f"layer {spec!r}: {name} is a container that never runs; its elements {shown} do: "
            f"name them, or use a glob ({name}.*)")


def closest_names(pattern: str, names: Sequence[str], n: int = 5) -> List[str]:
    """The module names closest to `pattern`; the top-level modules when none is close."""
    close = difflib.get_close_matches(pattern, list(names), n=n, cutoff=0.4)
    if not close:  # far from any name: show where the top-level modules are
        close = sorted({name.split(".")[0] for name in names})[:n]
    return close


def _not_found(spec: str, pattern: str, names: List[str]) -> str:
    close = closest_names(pattern, names)
    what = "pattern" if is_glob(pattern) else "layer"
    return (f"{what} {spec!r} matches no module of the model; closest: {', '.join(close)}; "
            "fix layers.names (python run.py mode=list shows every module)")


def _wrong_type(spec: str, type_name: str, candidates: List[nn.Module]) -> str:
    present = sorted({t for m in candidates for t in type_names(m)} - {"Module", "object"})
    close = difflib.get_close_matches(type_name, present, n=5, cutoff=0.5) or present[:8]
    return f"layer {spec!r}: no module of type {type_name} there; types there include {', '.join(close)}"
