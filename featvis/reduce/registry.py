"""Every reduction by name, found by importing each module of the featvis.reduce package.

A module that defines a `Reduction` subclass with a `name` adds that reduction: nothing
else lists them; each one's options are a dataclass of featvis.reduce.options (which the command
line stores in Hydra's ConfigStore without importing this package), and `build` makes the reduction
a job runs from its options and the loaded model.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Type

from omegaconf import OmegaConf
from torch import nn

from featvis.errors import ConfigError
from featvis.reduce.base import Reduction
from featvis.reduce.options import ReductionConfig

PACKAGE = "featvis.reduce"


def discover(package: str = PACKAGE) -> Dict[str, Type[Reduction]]:
    """{name: class} of the Reduction subclasses defined in the modules of `package`, by name.

    Raises TypeError when two classes claim one name.
    """
    found: Dict[str, Type[Reduction]] = {}
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, Reduction) and cls.__module__ == module.__name__
                    and cls.name and not inspect.isabstract(cls)):
                continue
            if cls.name in found:
                raise TypeError(f"reduction {cls.name!r} is defined twice: {found[cls.name].__module__} "
                                f"and {module.__name__}; rename one")
            found[cls.name] = cls
    return dict(sorted(found.items()))


@lru_cache(maxsize=None)
def reductions() -> Mapping[str, Type[Reduction]]:
    """Every reduction of featvis.reduce, by name (discovered once per process)."""
    return MappingProxyType(discover())


def names() -> List[str]:
    return list(reductions())


def find(name: str) -> Optional[Type[Reduction]]:
    """The reduction class called `name`, or None."""
    return reductions().get(name)


def get(name: str) -> Type[Reduction]:
    """The reduction class called `name`; ConfigError (one line, with the choices) if there is none."""
    try:
        return reductions()[name]
    except KeyError:
        raise ConfigError(f"reduction.name={name!r} is unknown: use one of {names()}") from None


def check(config: ReductionConfig) -> Type[Reduction]:
    """The config's reduction, its options checked; ConfigError for a bad value or a config of
    another reduction's type (`reduction=topk reduction.name=select_max`)."""
    cls = get(config.name)
    given = OmegaConf.get_type(config)  # the dataclass of Hydra's typed node, or of the instance
    if given is not cls.config_class:
        raise ConfigError(f"reduction.name={config.name} does not match the options given "
                          f"({getattr(given, '__name__', given)}): choose the reduction with reduction={config.name}")
    cls.check_options(config)
    return cls


def build(config: ReductionConfig, model: Optional[nn.Module] = None) -> Reduction:
    """The reduction a job runs: options checked, then built with the loaded model (which
    resolves a target class), so every ReductionError comes before any output is written."""
    return check(config)(config, model)


def create(name: str, model: Optional[nn.Module] = None, **options: Any) -> Reduction:
    """A reduction from its name and options, for scripts and tests: create("topk", topk=2)."""
    cls = get(name)
    return cls(cls.config_class(name=name, **options), model)
