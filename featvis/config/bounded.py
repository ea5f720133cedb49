"""Config files are read within bounds: their size, their YAML alias expansion, and defaults loops.

A preset is data someone shares, so reading one must cost what its size says. Measured on
Hydra 1.3.8 before this module: a 509-byte file of nested YAML anchors (a "billion
laughs") ran for minutes while OmegaConf expanded every alias into nodes of its own; a
1 MB preset took 23 s to reach its error, a 10 MB one over 150 s; a `defaults` loop
between two presets was "unexpected RecursionError".

`install()` (featvis.cli.main) wraps Hydra's config repository, so that every YAML file
Hydra is about to parse, from a folder (`file://`: conf/, `hydra.searchpath` folders) or a
package (`pkg://`), is first

- a regular file (not a FIFO, a device or a folder, which would block or never end),
- at most `MAX_BYTES` (256 KiB; FEATVIS_MAX_CONFIG_KIB sets another): featvis's own largest
  config file is under 3 KiB, a team's preset a few KiB;
- composed by PyYAML without building anything (libyaml's composer: a node graph, in which an
  alias is the very node it names) and measured: the nodes its aliases add once each is
  expanded, as OmegaConf will, at most `MAX_NODES` (100,000; featvis's whole composed config
  is about 200) beyond the nodes the file writes out (which its size bounds).

Each refusal is a ConfigError naming the file. A defaults loop is found when Hydra's
recursion gives up: the config paths on the stack of its defaults tree say which files
include each other (`defaults_loop`).

Hydra has no public hook for this: `ConfigRepository.load_config` and `_find_object_source`,
the sources' `path`/`scheme()`/`_normalize_file_name`, and the frames of
`defaults_list._create_defaults_tree_impl` are private; tests/test_private_apis.py pins them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import yaml
from hydra._internal.config_repository import ConfigRepository
from hydra.core.object_type import ObjectType

from featvis.errors import ConfigError, env_number
from featvis.io import not_a_file

MAX_KIB = 256  # a config file's size limit, in KiB (FEATVIS_MAX_CONFIG_KIB)
MAX_NODES = 100_000  # YAML nodes once every alias is expanded
MAX_DEPTH = 64  # levels of nesting (OmegaConf builds them recursively; featvis's own configs nest 5 deep)
TREE_FRAME = "_create_defaults_tree_impl"  # hydra._internal.defaults_list: one frame per config it expands

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML was built with it
_original: Optional[Any] = None


def max_bytes() -> int:
    return int(env_number("FEATVIS_MAX_CONFIG_KIB", MAX_KIB) * 1024)


def install() -> None:
    """Bound every config file Hydra reads from now on in this process (idempotent)."""
    global _original
    if _original is not None:
        return
    load = ConfigRepository.load_config
    _original = load

    def load_config(self: ConfigRepository, config_path: str) -> Any:
        source = self._find_object_source(config_path=config_path, object_type=ObjectType.CONFIG)
        if source is not None:
            check_source(source, config_path)
        return load(self, config_path)

    ConfigRepository.load_config = load_config  # type: ignore[method-assign]


def uninstall() -> None:
    """Give Hydra its own method back (tests)."""
    global _original
    if _original is not None:
        ConfigRepository.load_config = _original  # type: ignore[method-assign]
        _original = None


def check_source(source: Any, config_path: str) -> None:
    """Check the file `source` (a Hydra ConfigSource) is about to parse for `config_path`.

    By scheme, not by class: Hydra's plugin scan executes its core plugin modules anew, so
    the source classes it uses are not the ones an import here would see.
    """
    name = source._normalize_file_name(config_path)
    if source.scheme() == "file":
        path = os.path.realpath(os.path.join(source.path, name))
        if os.path.lexists(path):  # Hydra's own error names a missing one
            check_file(path)
    elif source.scheme() == "pkg":
        from importlib import resources  # noqa: PLC0415 - as Hydra's package source reads it

        try:
            res = resources.files(source.path).joinpath(name)
            found = res.is_file()
        except (ValueError, ModuleNotFoundError, TypeError, OSError):
            found = False
        if found:
            where = f"pkg://{source.path}/{name}"
            with res.open("rb") as stream:
                check_text(_read_bounded(stream, where), where)


def check_file(path: str) -> None:
    """ConfigError unless `path` is a regular file Hydra may parse within bounds."""
    what = not_a_file(path)
    if what is not None:
        raise ConfigError(f"config file {path} {what}: a config must be a YAML file; fix it or remove it from "
                          "the search path")
    size = os.path.getsize(path)
    limit = max_bytes()
    if size > limit:
        raise ConfigError(f"config file {path} is {size / 1024:.0f} KiB, more than the {limit // 1024} KiB "
                          "a featvis config may be: a preset is a few keys; keep data (lists of images, "
                          "weights) in files it names, or raise FEATVIS_MAX_CONFIG_KIB if you mean it")
    with open(path, "rb") as stream:
        check_text(_read_bounded(stream, path), path)


def _read_bounded(stream: Any, name: str) -> bytes:
    limit = max_bytes()
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"config file {name} is more than the {limit // 1024} KiB a featvis config may be: "
                          "keep data in files it names, or raise FEATVIS_MAX_CONFIG_KIB if you mean it")
    return data


def check_text(data: bytes, name: str) -> None:
    """ConfigError when the YAML in `data` expands (its aliases followed) to more than MAX_NODES nodes."""
    deep = ConfigError(f"config file {name} nests its values more than {MAX_DEPTH} levels deep: "
                       "a featvis config is a few levels of keys; write it flatter")
    try:
        root = yaml.compose(data, Loader=_Loader)
    except RecursionError as err:  # PyYAML's own composer, without libyaml
        raise deep from err
    except yaml.YAMLError as err:
        if "nesting depth" in str(err):  # libyaml stops at 1000 levels; OmegaConf's loader would not
            raise deep from err
        return  # not YAML: Hydra's own parse reports it, with the line
    if root is None:
        return
    written = distinct_nodes(root)  # what the file spells out: its size limit bounds those
    nodes, depth = expanded_nodes(root, written + MAX_NODES)
    if depth > MAX_DEPTH:
        raise deep
    if nodes > written + MAX_NODES:  # aliases add more than MAX_NODES to what is written
        raise ConfigError(f"config file {name} expands to more than {MAX_NODES:,} values through its YAML "
                          "aliases (&anchor / *alias), which featvis would have to build one by one: "
                          "write the values out, or use fewer nested aliases")


def distinct_nodes(root: yaml.Node) -> int:
    """How many nodes the file itself holds (an alias counted once, as the node it names)."""
    seen = {id(root)}
    stack = [root]
    while stack:
        for child in _children(stack.pop()):
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return len(seen)


def expanded_nodes(root: yaml.Node, limit: int) -> Tuple[int, int]:
    """(nodes, depth): how many nodes `root` stands for once every alias is expanded (counting
    stops past `limit`), and how deep they nest.

    The composer hands an alias back as the very node it names, so the graph is shared: sizes
    are memoised per node, which makes this linear in the file (and iterative: no recursion
    limit). An alias to a node that contains it (a cycle) is endless once expanded.
    """
    sizes: Dict[int, int] = {}
    depths: Dict[int, int] = {}
    stack: List[Tuple[yaml.Node, bool]] = [(root, False)]
    open_: set = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            children = _children(node)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(child)] for child in children))
            depths[key] = 1 + max((depths[id(child)] for child in children), default=0)
            continue
        if key in sizes:
            continue
        if key in open_:
            return limit + 1, len(open_)  # a node inside itself
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)], depths[id(root)]


def _children(node: yaml.Node) -> List[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def defaults_loop(err: RecursionError) -> Optional[str]:
    """The one line for a `defaults` loop, read off Hydra's defaults-tree frames in `err`'s traceback.

    Each frame of `_create_defaults_tree_impl` expands one config (`root.node`); in a loop
    the same config paths come back. None when `err` did not come from there.
    """
    chain: List[Tuple[str, str]] = []  # (config path, where it was found), outermost first
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == TREE_FRAME:
            entry = _tree_entry(frame.f_locals)
            if entry is not None:
                chain.append(entry)
        tb = tb.tb_next
    seen: Dict[str, int] = {}
    for i, (path, _) in enumerate(chain):
        if path in seen:
            loop = [f"{p} ({where})" for p, where in chain[seen[path]:i]]
            text = f"{loop[0]} includes " + ", which includes ".join(loop[1:] + [f"{path} again"])
            if len(loop) == 1:
                return (f"a defaults loop: {loop[0]} includes itself; Hydra would include it forever: "
                        "remove that defaults entry")
            return f"a defaults loop: {text}; Hydra would include them forever: remove one of these defaults entries"
        seen[path] = i
    return None


def _tree_entry(local: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    try:
        node = local["root"].node
        path = node.get_config_path()
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    repo = local.get("repo")
    where = path
    try:
        found = repo.load_config(config_path=path) if repo is not None else None
        if found is not None:
            where = _file_name(found.path, path)
    except Exception:  # the loop's own files load fine; anything else: name the config path only
        pass
    return path, where


def _file_name(root: str, config_path: str) -> str:
    """`file:///shared/conf` + `preset/ours` -> /shared/conf/preset/ours.yaml."""
    name = config_path if config_path.endswith(".yaml") else f"{config_path}.yaml"
    if root.startswith("file://"):
        return f"{root[len('file://'):].rstrip('/')}/{name}"
    return f"{root.rstrip('/')}/{name}"
