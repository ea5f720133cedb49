"""Presets and model options are data: no config may name code for Hydra to run.

Hydra calls whatever a composed config names: every `hydra.callbacks.<x>._target_`
(with its `_args_`), nested `_target_`s in a launcher's or sweeper's options, and the
`class` and `()` keys of `hydra.job_logging` / `hydra.hydra_logging` (Python's logging
dictConfig imports and calls them); `hydra.job.env_set` sets variables such as
LD_PRELOAD for every process the job starts. A preset on `hydra.searchpath` could
otherwise run a file (`_target_: mmengine.config.Config.fromfile`) or truncate one
(`_target_: builtins.open`).

`install()` (featvis.cli.main) checks every config Hydra composes in this process (the
run's, the sweep's, each sweep job's) before Hydra uses it: before logging is configured,
callbacks are built or a launcher is chosen. Allowed are only featvis's own callbacks
(classes of featvis.sweep.callbacks), the launcher's and sweeper's own `_target_` (Hydra
itself builds only registered plugins from it) and logging classes of the `logging`
package. Anything else is a ConfigError naming the key and the file (or command-line
override) it came from.

Hydra has no public hook for this: `ConfigLoaderImpl.load_configuration` (the composed
config) and `_load_single_config` (each file, to name where a key came from) are wrapped;
tests/test_private_apis.py pins both.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from featvis.config.bounded import defaults_loop
from featvis.config.confined import check_composed
from featvis.errors import ConfigError

# keys Hydra's instantiate (and logging's dictConfig, "()") reads as "call this"
CALL_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_", "_call_", "()"})
CALLBACKS_MODULE = "featvis.sweep.callbacks"  # the only callbacks a featvis config may name
PLUGIN_TARGETS = (("hydra", "launcher", "_target_"), ("hydra", "sweeper", "_target_"))
LOGGING_NODES = ("job_logging", "hydra_logging")
LOGGING_STREAMS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
# the handlers a logging config may build: streams, files (inside the job's folder) and nothing
LOGGING_HANDLERS = frozenset({"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler",
                              "logging.handlers.RotatingFileHandler", "logging.handlers.TimedRotatingFileHandler",
                              "logging.handlers.WatchedFileHandler"})
LOGGING_PARTS = {"formatters": "logging.Formatter", "filters": "logging.Filter"}
# what those handlers' constructors take, and what dictConfig reads itself
HANDLER_KEYS = frozenset({"class", "level", "formatter", "filters", "stream", "filename", "mode", "encoding",
                          "delay", "errors", "maxBytes", "backupCount", "when", "interval", "utc", "atTime"})
# variables that make the loader or an interpreter run code in every process the job starts
ENV_DENIED = re.compile(r"^(LD_.*|DYLD_.*|PYTHON.*|PATH|BASH_ENV|ENV|PERL5LIB|PERL5OPT|RUBYOPT|NODE_OPTIONS)$")
# ... and variables that move where a library writes or sends: folders (wandb's, torch's, the
# temporary one, the home folder), proxies and endpoints, and W&B's own settings (its server, key, folders)
ENV_ELSEWHERE = re.compile(r"^(HOME|TMPDIR|TMP|TEMP|XDG_.*|WANDB_.*|.*_DIR|.*_HOME|.*_PATH|.*_PROXY|.*_URL|.*_URI"
                           r"|http_proxy|https_proxy|all_proxy|no_proxy)$", re.IGNORECASE)

Path_ = Tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """One config file Hydra merged, as it placed it (its keys under their final package)."""

    name: str  # /shared/featvis_conf/preset/ours.yaml, pkg://hydra.conf/hydra/config, ...
    config: Any  # its content as plain containers (interpolations unresolved)


_sources: contextvars.ContextVar[Optional[List[Source]]] = contextvars.ContextVar("featvis_sources", default=None)
_original: Optional[Tuple[Any, Any]] = None  # Hydra's own two methods, once install() wrapped them


def names_over_preset(cfg: DictConfig) -> None:
    """`layers.names` given: the preset is not what runs, so the composed config (saved in .hydra/config.yaml,
    the W&B run's config, the sweep's index) says `layers.preset: null` instead of the group's default."""
    layers = cfg.get("layers") if isinstance(cfg, DictConfig) else None
    if isinstance(layers, DictConfig) and layers.get("names") is not None and layers.get("preset") is not None:
        with open_dict(layers):
            layers.preset = None


def install() -> None:
    """Check every config Hydra composes from now on in this process (idempotent)."""
    global _original
    if _original is not None:
        return
    load, load_single = ConfigLoaderImpl.load_configuration, ConfigLoaderImpl._load_single_config
    _original = (load, load_single)

    def load_configuration(self: ConfigLoaderImpl, config_name: Optional[str], overrides: List[str],
                           *args: Any, **kwargs: Any) -> DictConfig:
        token = _sources.set([])
        try:
            cfg = load(self, config_name, overrides, *args, **kwargs)
            check(cfg, _sources.get() or [], overrides)
            check_composed(cfg)  # a sweep job's folder inside the sweep folder
            names_over_preset(cfg)
        except RecursionError as err:  # Hydra expanding a `defaults` loop: name the files
            line = defaults_loop(err)
            if line is None:
                raise
            raise ConfigError(line) from None
        finally:
            _sources.reset(token)
        return cfg

    def _load_single_config(self: ConfigLoaderImpl, default: Any, repo: Any) -> Any:
        result = load_single(self, default, repo)
        sources = _sources.get()
        if sources is not None:
            sources.append(Source(_source_name(result.path, default.config_path), _plain(result.config)))
        return result

    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
    ConfigLoaderImpl._load_single_config = _load_single_config  # type: ignore[method-assign]


def uninstall() -> None:
    """Give Hydra its own methods back (tests)."""
    global _original
    if _original is not None:
        ConfigLoaderImpl.load_configuration, ConfigLoaderImpl._load_single_config = _original
        _original = None


def check(cfg: Any, sources: Sequence[Source] = (), overrides: Sequence[str] = ()) -> None:
    """Raise ConfigError for the first key of `cfg` that names code to run, with where it came from."""
    tree = _plain(cfg)
    for path, value in _walk(tree, ()):
        reason = refusal(path, value)
        if reason is not None:
            key = ".".join(path)
            raise ConfigError(f"{key}={_show(value)} in {origin(path, value, sources, overrides)}: {reason}")


def refusal(path: Path_, value: Any) -> Optional[str]:
    """Why the key at `path` (holding `value`) may not be in a featvis config; None when it may."""
    key = path[-1]
    fix = "remove it"
    if path[:1] == ("hydra",) and len(path) > 2 and path[1] in LOGGING_NODES:
        return _logging_refusal(path, value)
    if path == ("hydra", "output_subdir"):
        return _subdir_refusal(value)
    if path[:3] == ("hydra", "job", "env_set") and len(path) == 4 and ENV_DENIED.match(key):
        return (f"a config may not set {key}, which makes every process the job starts load or run "
                f"other code; set it in your shell if you mean it, or {fix}")
    if path[:3] == ("hydra", "job", "env_set") and len(path) == 4 and ENV_ELSEWHERE.match(key):
        return (f"a config may not set {key}, which moves where the job's libraries write or send their data, "
                f"outside its output folder; set it in your shell if you mean it, or {fix}")
    if key not in CALL_KEYS:
        return None
    if path in PLUGIN_TARGETS:
        return None  # Hydra builds only a registered launcher or sweeper plugin from it
    if len(path) == 4 and path[:2] == ("hydra", "callbacks") and key == "_target_" and _is_featvis_callback(value):
        return None
    own = ", ".join(f"{CALLBACKS_MODULE}.{name}" for name in featvis_callbacks())
    return (f"featvis configs are data and may not name code for Hydra to run ({key}); {fix} "
            f"(the callbacks a config may name: {own})")


def _subdir_refusal(value: Any) -> Optional[str]:
    """hydra.output_subdir: where Hydra writes config.yaml, hydra.yaml and overrides.yaml in the job's folder."""
    if value is None:
        return None
    text = str(value)
    if "${" in text:
        return "hydra.output_subdir must be a folder name written out, such as .hydra (not an interpolation)"
    if os.path.isabs(text) or os.path.normpath(text).split(os.sep)[0] == "..":
        return ("hydra.output_subdir must be a folder inside the job's output folder, such as .hydra: "
                "featvis writes only inside it")
    return None


def _logging_refusal(path: Path_, value: Any) -> Optional[str]:
    """Python's logging dictConfig imports `class`, calls `()` and passes every other handler key to it.

    A handler may be a stream to stdout/stderr, or a file (in the job's output folder:
    featvis.config.confined checks the resolved name when Hydra opens it); formatters and
    filters only the logging package's own; nothing that reaches a socket, a queue, mail,
    HTTP or syslog, sets attributes (`.`) or refers elsewhere (`cfg://`, `ext://`).
    """
    node, rest = path[1], path[2:]
    key = path[-1]
    if key in CALL_KEYS - {"()"}:
        return f"featvis configs are data and may not name code for Hydra to run ({key}); remove it"
    if isinstance(value, str) and value.startswith("cfg://"):
        return "a logging config may not refer to other parts of the config (cfg://); write the value out"
    if isinstance(value, str) and value.startswith("ext://") and value not in LOGGING_STREAMS:
        return f"a logging config may refer only to {', '.join(sorted(LOGGING_STREAMS))}; remove it"
    if len(rest) == 3 and rest[0] == "handlers":
        return _handler_key_refusal(node, key, value)
    if len(rest) == 3 and rest[0] in ("formatters", "filters") and key in ("class", "()"):
        allowed = LOGGING_PARTS[rest[0]]
        if value != allowed:
            return f"a logging config's {rest[0]} may only be {allowed} ({key}); remove it"
        return None
    if key in ("class", "()"):
        return f"a logging config may name classes only for its handlers, formatters and filters ({key}); remove it"
    return None


def _handler_key_refusal(node: str, key: str, value: Any) -> Optional[str]:
    """One key of a handler of hydra.<node> (job_logging or hydra_logging)."""
    if key in ("class", "()"):
        if key == "()" or value not in LOGGING_HANDLERS:
            return (f"a logging handler may be only {', '.join(sorted(LOGGING_HANDLERS))} ({key}): "
                    "nothing that sends the log to a socket, a queue, mail, HTTP or syslog; use one of those")
        return None
    if key not in HANDLER_KEYS:
        return (f"a logging handler takes only the keys {', '.join(sorted(HANDLER_KEYS))} ({key}); "
                "remove it")
    if key == "filename" and node == "hydra_logging":
        return ("hydra.hydra_logging runs before the job has an output folder, so it may log only to "
                "stdout or stderr; log to a file in hydra.job_logging instead")
    if key == "mode" and value != "a":
        return "a logging config may only append to its log files (mode: a); remove the mode"
    return None


def featvis_callbacks() -> List[str]:
    """The Hydra callbacks featvis ships (the classes of featvis.sweep.callbacks)."""
    module = importlib.import_module(CALLBACKS_MODULE)
    return sorted(name for name, obj in vars(module).items()
                  if isinstance(obj, type) and issubclass(obj, Callback) and obj.__module__ == CALLBACKS_MODULE)


def _is_featvis_callback(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith(CALLBACKS_MODULE + "."):
        return False
    return value[len(CALLBACKS_MODULE) + 1:] in featvis_callbacks()


def origin(path: Path_, value: Any, sources: Sequence[Source], overrides: Sequence[str]) -> str:
    """The last file that set `path` to `value`, else the command-line override that did."""
    for source in reversed(sources):
        if _lookup(source.config, path) == value:
            return source.name
    for line in reversed(list(overrides)):
        key = _override_key(line)
        if key and (key == path[:len(key)] or path == key[:len(path)]):
            return f"the command-line override {line!r}"
    return "the composed config"


def _override_key(line: str) -> Optional[Path_]:
    try:
        (parsed,) = OverridesParser.create().parse_overrides([line])
    except Exception:  # Hydra has refused it already if it mattered
        return None
    return tuple(parsed.key_or_group.split("."))


def _source_name(root: str, config_path: Optional[str]) -> str:
    """`file:///shared/conf` + `preset/ours` -> /shared/conf/preset/ours.yaml; pkg:// and structured:// as they are."""
    if not config_path:
        return root
    name = config_path if config_path.endswith((".yaml", ".yml")) else f"{config_path}.yaml"
    if root.startswith("file://"):
        return f"{root[len('file://'):].rstrip('/')}/{name}"
    return f"{root.rstrip('/')}/{config_path}" if not root.endswith("://") else f"{root}{config_path}"


def _plain(cfg: Any) -> Any:
    """A config as plain dicts and lists, interpolations left as written."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    return cfg


def _walk(node: Any, path: Path_) -> Iterator[Tuple[Path_, Any]]:
    """(path, value) of every key in a tree of dicts and lists; list items are keyed by index."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), value
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, str(index)))


def _lookup(node: Any, path: Path_) -> Any:
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _ABSENT
    return node


_ABSENT = object()


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."
