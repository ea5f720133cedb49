"""A job's overrides of the mmseg config (model.cfg_options, model.scale), applied before the model is built.

`model.cfg_options` is what mmseg's own tools take as `--cfg-options`: keys of the mmseg
config, merged with MMEngine's `Config.merge_from_dict` (a dict merges into a dict, any
other value replaces; a digit selects an element of a list). From the command line:

    python run.py model.cfg_options.model.test_cfg.mode=whole             # nested keys, as --cfg-options
    python run.py +model.cfg_options.model.test_cfg.mode=whole            # the same (Hydra's + form)
    python run.py '+model.cfg_options={model.test_cfg.mode: whole}'      # dotted keys
    python run.py '+model.cfg_options={test_pipeline.1.scale: [512,256]}' # an element of a list
    python run.py '+model.cfg_options={model.test_cfg: {_delete_: true, mode: whole}}'  # replace, not merge

Every key must already be in the config: a misspelt key is an error naming the closest
keys, never a key silently added. To add a key the config lacks, put a `+` in front of the
first part that is new (`{model.decode_head.+new_key: 1}`; `{+a.b: 1}`: `a` and all below it
may be new); the parts before it must exist. The `+` needs the dict form: Hydra's dotted
override keys cannot hold one. A two-element list under a key named `scale`, `crop_size`
or `stride` becomes a tuple, as mmseg's transforms and slide inference expect.

`model.scale=[width, height]` sets the `scale` of every `Resize` in the test pipeline
(`test_pipeline`, which mmseg's `inference_model` runs, and the test and val dataloaders'
pipelines), the mmcv (w, h) convention; each Resize keeps its own `keep_ratio`. A
`ResizeShortestEdge` (SAN) gets the short edge min(w, h) and at most max(w, h) for the long
one. It is applied after cfg_options, so it wins over a Resize scale set there.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from featvis.errors import ConfigError

if TYPE_CHECKING:  # mmengine is imported by whoever builds a Config; this module stays light for sweep plans
    from mmengine.config import Config

NEW = "+"  # in front of a key part: it (and what is below it) may be new to the config
DELETE = "_delete_"  # MMEngine's: a dict holding it replaces the value instead of merging into it
TUPLE_KEYS = ("scale", "crop_size", "stride")  # a 2-element list under these keys becomes a tuple
RESIZE = "Resize"
SHORTEST_EDGE = "ResizeShortestEdge"  # mmseg's resize of the short edge (SAN)
PIPELINES = ("test_pipeline", "test_dataloader.dataset.pipeline", "val_dataloader.dataset.pipeline")

Options = Union[Mapping[str, Any], DictConfig, str, None]


def plain(value: Any) -> Any:
    """OmegaConf containers as plain dicts and lists (a JSON string as what it holds); anything else as is."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return value


def flatten(cfg_options: Options) -> Dict[str, Any]:
    """{dotted key: value}: nested dicts and dotted keys alike, in the order given.

    A dict value holding `_delete_` stays whole (it replaces, see the module doc); so does
    an empty dict, and every list.
    """
    options = plain(cfg_options) or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"model.cfg_options={options!r} must be a dict of mmseg config keys, "
                          "e.g. '+model.cfg_options={model.test_cfg.mode: whole}'")
    flat: Dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if not str(key) or any(not part for part in str(key).split(".")):
                raise ConfigError(f"model.cfg_options has an empty key part in {path!r}: "
                                  "write keys as a.b.c, e.g. model.test_cfg.mode")
            if isinstance(value, Mapping) and value and DELETE not in value:
                walk(value, f"{path}.")
            else:
                flat[path] = value

    walk(options, "")
    return flat


def canonical(cfg_options: Options) -> str:
    """The options as one JSON string (flattened): hashable, for ModelSource, the model cache and share keys."""
    def refuse(value: Any) -> Any:
        raise ConfigError(f"model.cfg_options holds {value!r} ({type(value).__name__}): values must be plain "
                          "data (numbers, strings, booleans, null, lists and dicts of them)")
    return json.dumps(flatten(cfg_options), default=refuse)


def frozen_scale(scale: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """model.scale as a hashable (width, height), or None."""
    if scale is None:
        return None
    values = [int(v) for v in plain(scale)]
    if len(values) != 2 or min(values) < 1:
        raise ConfigError(f"model.scale={values} must be [width, height], both at least 1, or null")
    return values[0], values[1]


def apply_options(cfg: "Config", cfg_options: Options = None, scale: Optional[Sequence[int]] = None) -> "Config":
    """`cfg` (an mmengine Config, changed in place and returned) with `cfg_options` merged and `scale` set."""
    flat = flatten(cfg_options)
    if flat:
        merged: Dict[str, Any] = {}
        for path, value in flat.items():
            parts = _check_key(cfg, path)
            merged[".".join(parts)] = _tuples(copy.deepcopy(value), parts[-1])
        try:
            cfg.merge_from_dict(merged, allow_list_keys=True)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
            raise ConfigError(f"model.cfg_options cannot be merged into {_name(cfg)}: {_first_line(err)}; "
                              "check the value's type against the config's (a dict replaces "
                              f"a non-dict only with {DELETE}: true in it)") from err
    if scale is not None:
        set_test_scale(cfg, frozen_scale(scale))
    return cfg


def set_test_scale(cfg: "Config", scale: Tuple[int, int]) -> None:
    """Set `scale` (width, height) of every Resize of the test pipelines; ConfigError when test_pipeline has none."""
    in_test_pipeline = 0  # Resizes in test_pipeline, the one inference_model runs
    for where in PIPELINES:
        pipeline = _select(cfg, where)
        if not isinstance(pipeline, list):
            continue
        for transform in pipeline:
            kind = transform.get("type") if isinstance(transform, Mapping) else None
            if kind == RESIZE:
                transform["scale"] = tuple(scale)
                if transform.get("scale_factor") is not None:  # mmcv's Resize takes scale or scale_factor
                    transform["scale_factor"] = None
            elif kind == SHORTEST_EDGE:  # SAN's: the short edge to min(w, h), the long one at most max(w, h)
                transform["scale"], transform["max_size"] = min(scale), max(scale)
            else:
                continue
            if where == PIPELINES[0]:
                in_test_pipeline += 1
    if not in_test_pipeline:
        steps = [str(t.get("type")) for t in _select(cfg, PIPELINES[0]) or [] if isinstance(t, Mapping)]
        have = f"its transforms: {', '.join(steps)}" if steps else "it has no test_pipeline"
        raise ConfigError(f"model.scale={list(scale)}: the mmseg config {_name(cfg)} has no Resize in its "
                          f"test_pipeline ({have}); drop model.scale, and resize the images yourself")


def _check_key(cfg: "Config", path: str) -> List[str]:
    """The key's parts without `+` marks, once each part before the first `+` is in the config."""
    raw = path.split(".")
    parts = [p[len(NEW):] if p.startswith(NEW) else p for p in raw]
    new_from = next((i for i, p in enumerate(raw) if p.startswith(NEW)), len(raw))
    if any(not p for p in parts):
        raise ConfigError(f"model.cfg_options key {path!r} has an empty part: write + right before a key name")
    node: Any = cfg
    for i, part in enumerate(parts[:new_from]):
        child = _child(node, part)
        if child is _MISSING:
            raise ConfigError(_unknown_key(cfg, node, parts, i, path))
        node = child
    return parts


_MISSING = object()


def _child(node: Any, part: str) -> Any:
    if isinstance(node, list):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else _MISSING
    try:
        return node[part] if part in node else _MISSING
    except TypeError:  # a number, a string, None: no keys below it
        return _MISSING


def _unknown_key(cfg: "Config", node: Any, parts: List[str], i: int, path: str) -> str:
    """One line: which part is not in the config, the closest keys there, and how to add a new one."""
    where = ".".join(parts[:i])
    missing = ".".join(parts[: i + 1])
    added = ".".join([*parts[:i], NEW + parts[i], *parts[i + 1:]])
    head = f"model.cfg_options key {path!r}: the mmseg config {_name(cfg)} has no {missing!r}"
    if isinstance(node, list):
        return (f"{head}: {where} is a list of {len(node)} (indices 0..{len(node) - 1}); "
                "use an index in range, or replace the whole list")
    if not _is_mapping(node):
        return (f"{head}: {where} is {node!r}, not a dict; replace it whole, e.g. "
                f"'+model.cfg_options={{{where}: {{{DELETE}: true, {parts[i]}: ...}}}}'")
    keys = [str(k) for k in node.keys()]
    close = difflib.get_close_matches(parts[i], keys, n=3, cutoff=0.6)
    if close:
        named = [_completed(node, c, parts[i + 1:], parts[:i]) for c in close]
        hint = f"closest: {', '.join(named)}"
    else:
        shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} keys)" if len(keys) > 12 else "")
        hint = f"keys of {where or 'the config'}: {shown or 'none'}"
    return (f"{head} ({hint}); fix the key, or mark a key the config lacks with + (dict form: "
            f"'+model.cfg_options={{{added}: ...}}')")


def _completed(node: Any, key: str, rest: List[str], above: List[str]) -> str:
    """`above.key.rest` when the rest of the path exists under `key`, else `above.key`."""
    child = _child(node, key)
    for part in rest:
        child = _child(child, part)
        if child is _MISSING:
            return ".".join([*above, key])
    return ".".join([*above, key, *rest])


def _is_mapping(node: Any) -> bool:
    return isinstance(node, Mapping) or (hasattr(node, "keys") and hasattr(node, "__getitem__"))


def _tuples(value: Any, key: str) -> Any:
    """2-element lists under `scale`, `crop_size` or `stride` (at any depth) as tuples."""
    if isinstance(value, Mapping):
        return {k: _tuples(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        if key in TUPLE_KEYS and len(value) == 2 and all(not isinstance(v, (list, Mapping)) for v in value):
            return tuple(value)
        return [_tuples(v, "") for v in value]
    return value


def _select(cfg: "Config", dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = _child(node, part)
        if node is _MISSING:
            return None
    return node


def _name(cfg: "Config") -> str:
    filename = getattr(cfg, "filename", None)
    return Path(filename).name if filename else "(in memory)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().strip("'\"").splitlines()
    return text[0] if text else type(err).__name__
