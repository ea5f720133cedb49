"""`mode=list`: every module of the model, what it outputs, and which layer presets hold it.

    python run.py mode=list listing.filter='decode_head.*' listing.max_depth=3

One real forward pass (mmseg's `inference_model`) on the first image of `image` (run again,
padded, when the network needs its input to be a multiple of its stride: featvis.model.stride;
what the failed pass output is not listed), with a forward hook on every module that keeps
only the formatted shape of each output (never the tensor) and counts the calls. The hooks
are removed on every exit path. The result is a text table, one row per module in
`named_modules()` order, indented by depth:

    module                       type       output         presets
    decode_head.conv_seg         Conv2d     1x4x24x32      decoder, dense

Outputs are written compactly: a tensor `1x64x24x32`, a tuple or list `(a, b)`, a dict
`{key: a}`, anything else by its type name; `x3` after an output means the module ran
three times with it; `-` means no forward hook saw it run (an auxiliary head or a loss
at inference, or a head whose `predict` calls its `forward` directly), so featvis cannot
draw it. Auxiliary heads are run as featvis runs them to draw them (featvis.record.auxiliary).
The presets column tags what each preset (featvis.record.presets) draws, only where it ran.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmseg.apis import inference_model
from torch import nn

from featvis.config.schema import Config
from featvis.data import dataset
from featvis.data import images as inputs
from featvis.engine.forward_errors import run_explained
from featvis.errors import LayerNotFoundError
from featvis.model.load import LoadedModel, load_model
from featvis.record import presets as layer_presets
from featvis.record.auxiliary import AuxiliaryRun
from featvis.record.hooks import HookSet
from featvis.record.layers import INPUT, closest_names, format_pick, select_layers

MAX_ITEMS = 8  # elements of a tuple, list or dict written out before `...`
MAX_NESTING = 4  # levels of nested containers written out
COLUMNS = ("module", "type", "output", "presets")
NOT_RUN = "-"


def format_output(value: Any, _nesting: int = 0) -> str:
    """`1x64x24x32`, `(a, b)`, `{key: a}`, or the type name of anything else."""
    if isinstance(value, torch.Tensor):
        return "x".join(str(d) for d in value.shape) if value.dim() else "scalar"
    if isinstance(value, (tuple, list, dict)) and _nesting >= MAX_NESTING:
        return "(...)" if not isinstance(value, dict) else "{...}"
    if isinstance(value, (tuple, list)):
        items = [format_output(v, _nesting + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value)} in all")
        return "(" + ", ".join(items) + ")"
    if isinstance(value, dict):
        items = [f"{k}: {format_output(v, _nesting + 1)}" for k, v in list(value.items())[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value)} in all")
        return "{" + ", ".join(items) + "}"
    return "None" if value is None else type(value).__name__


class OutputShapes(HookSet):
    """Forward hooks on every named module that count the formatted shapes of its outputs.

        with OutputShapes(model) as shapes:
            model(...)
        shapes.text("decode_head.conv_seg")   # '1x4x24x32', '1x64x8x8 x2', or '-'
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: Dict[str, Dict[str, int]] = {}  # name -> {formatted output: calls}, first seen first

    def register(self) -> None:
        for name, module in self.model.named_modules():
            if name:
                self.add(module.register_forward_hook(self._hook_for(name)))

    def _hook_for(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            seen = self.calls.setdefault(name, {})
            text = format_output(output)  # only the text is kept, never the output
            seen[text] = seen.get(text, 0) + 1
        return hook

    def text(self, name: str) -> str:
        seen = self.calls.get(name)
        if not seen:
            return NOT_RUN
        return "; ".join(text if n == 1 else f"{text} x{n}" for text, n in seen.items())


@dataclass
class Row:
    name: str
    type: str
    output: str
    presets: List[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return depth(self.name)


def depth(name: str) -> int:
    return name.count(".") + 1


def filter_names(names: Sequence[str], pattern: str, max_depth: Optional[int]) -> List[str]:
    """The names matching the glob `pattern` (`*` crosses dots), at most `max_depth` deep."""
    matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not matched:
        raise LayerNotFoundError(f"listing.filter={pattern!r} matches no module of the model; closest: "
                                 f"{', '.join(closest_names(pattern, names))}; fix listing.filter "
                                 "(a glob on the full name, e.g. listing.filter='decode_head.*')")
    if max_depth is None:
        return matched
    shallow = [n for n in matched if depth(n) <= max_depth]
    if not shallow:
        raise LayerNotFoundError(f"listing.filter={pattern!r} matches {len(matched)} modules, none within "
                                 f"listing.max_depth={max_depth} (the shallowest is {min(map(depth, matched))} "
                                 "deep): raise listing.max_depth or set it to null")
    return shallow


def preset_marks(model: nn.Module, presets: Mapping[str, Sequence[str]],
                 ran: Optional[Callable[[str], bool]] = None) -> Tuple[Dict[str, List[str]], Dict[str, str]]:
    """{module name: [presets holding it]} (with the pick, `backbone[2]`; `decoder/input` for what
    enters it), and {preset: why it fails}. With `ran`, only the modules that ran are tagged."""
    marks: Dict[str, List[str]] = {}
    broken: Dict[str, str] = {}
    for preset, specs in presets.items():
        try:
            selected = select_layers(model, list(specs), optional=True)
        except LayerNotFoundError as err:
            broken[preset] = str(err)
            continue
        for sel in selected:
            if ran is not None and not ran(sel.module_name):
                continue  # never tag what does not run: it would draw nothing
            label = preset + (INPUT if sel.port == "input" else "") + format_pick(sel.pick)
            labels = marks.setdefault(sel.module_name, [])
            if label not in labels:
                labels.append(label)
    return marks, broken


def module_rows(model: nn.Module, names: Sequence[str], shapes: OutputShapes,
                marks: Mapping[str, List[str]]) -> List[Row]:
    modules = dict(model.named_modules())
    return [Row(n, type(modules[n]).__name__, shapes.text(n), list(marks.get(n, []))) for n in names]


def render_table(rows: Sequence[Row]) -> List[str]:
    """Aligned columns; names indented two spaces per level below the shallowest row."""
    top = min(r.depth for r in rows)
    cells = [list(COLUMNS)] + [["  " * (r.depth - top) + r.name, r.type, r.output, ", ".join(r.presets)]
                               for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(c[i].ljust(widths[i]) for i in range(len(widths))), c[-1]]).rstrip() for c in cells]


def list_modules(cfg: Config, loaded: Optional[LoadedModel] = None) -> str:
    """The listing of `mode=list` for the validated, typed job config `cfg` (pass `loaded` to reuse a built model)."""
    # masks play no part in a listing
    samples = dataset.collect_any(cfg.image, None, cfg.model.config, cfg.data_root, cfg.model.cfg_options,
                                 cfg.model.scale).usable()
    if loaded is None:
        loaded = load_model(cfg.model.config, cfg.model.checkpoint, cfg.device,
                            trust_checkpoint=cfg.model.trust_checkpoint, strict=cfg.model.strict,
                            cfg_options=cfg.model.cfg_options, scale=cfg.model.scale)
    model = loaded.model
    all_names = [n for n, _ in model.named_modules() if n]
    names = filter_names(all_names, cfg.listing.filter, cfg.listing.max_depth)
    item = inputs.load(samples[0])
    with OutputShapes(model) as shapes:
        AuxiliaryRun.attach(shapes, model)  # featvis runs auxiliary heads to draw them: list what they output
        # a too-small image: one line saying so; a model that needs padding to its stride: padded, run again
        result = run_explained(lambda: inference_model(model, item.image_bgr), model, item, cfg.model.config,
                               discard=shapes.calls.clear)
    marks, broken = preset_marks(model, layer_presets.available(model, cfg.model.layer_presets),
                                 ran=lambda name: shapes.text(name) != NOT_RUN)
    rows = module_rows(model, names, shapes, marks)

    fed = result.metainfo.get("img_shape")
    fed_text = "x".join(str(d) for d in fed[:2]) if fed else "?"
    padded = result.metainfo.get("pad_shape")
    if fed and padded and tuple(padded[:2]) != tuple(fed[:2]):  # the data preprocessor padded it
        fed_text += f" padded to {'x'.join(str(d) for d in padded[:2])}"
    height, width = samples[0].size
    weights = f"weights {cfg.model.checkpoint}" if cfg.model.checkpoint else "RANDOM weights (model.checkpoint=null)"
    more = f" (first of {len(samples)} images)" if len(samples) > 1 else ""
    lines = [
        f"model {cfg.model.name}: {type(model).__name__} from {cfg.model.config}, {weights}, on {loaded.device}",
        f"image {_shown_path(samples[0].image_path)}{more}: {height}x{width} (HxW) on disk, fed to the model "
        f"as {fed_text} (img_shape); outputs of one forward pass",
        "",
        *render_table(rows),
        "",
        _footer(rows, len(all_names), cfg),
        _usage(rows),
    ]
    lines += [f"preset {p!r} does not resolve on this model: {why}" for p, why in broken.items()]
    return "\n".join(lines)


def _footer(rows: Sequence[Row], total: int, cfg: Config) -> str:
    how = []
    if cfg.listing.filter != "*":
        how.append(f"listing.filter={cfg.listing.filter!r}")
    if cfg.listing.max_depth is not None:
        how.append(f"listing.max_depth={cfg.listing.max_depth}")
    which = f" ({', '.join(how)})" if how else ""
    return (f"{len(rows)} of {total} modules listed{which}; output x3: returned 3 times; {NOT_RUN}: no forward "
            "hook saw it run (not run at inference, or its forward called directly), so it cannot be drawn")


def _usage(rows: Sequence[Row]) -> str:
    """How to draw a listed module, with one of the listed names as the example."""
    maps = [r for r in rows if r.output.split(" x")[0].replace("x", "").isdigit()]  # one tensor
    example = next((r for r in maps if r.presets), maps[0] if maps else rows[0])
    top = example.name.split(".")[0]
    return (f"draw one: layers.names=[{example.name}]; also globs ({top}.*), a type ({top}.*@{example.type}), "
            "an element of a tuple output (name[i]) or of a dict output (name:key)")


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(path)
