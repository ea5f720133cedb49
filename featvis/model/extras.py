"""The optional OpenMMLab packages some mmseg model families need, and how to get them.

mmseg 1.2.2 ships configs whose models come partly from other OpenMMLab packages:
Mask2Former and MaskFormer build their heads and pixel decoders from mmdet; ConvNeXt and
PoolFormer their backbones from mmpretrain, which imports torchvision. They are extras of
featvis (pyproject.toml `[project.optional-dependencies]`), not dependencies:

    pip install -e ".[mmdet]"        # mmdet 3.3.0 and its own few dependencies
    pip install -e ".[mmpretrain]"   # mmpretrain 1.2.0; torchvision apart (below)

torchvision must be the build for the installed torch (0.28.0 for torch 2.13.0). On PyPI
that is a CUDA build, which does not import beside a CPU-only torch ("operator
torchvision::nms does not exist"), so it is not in the extra: `torchvision_command()` says
where to get it. `advice(module)` is the one-line advice featvis gives when one of these
modules is missing from a config's custom_imports (featvis.model.load); `check_config` says
the same before a model is built whose config names mmdet or mmpretrain types without
importing them (MaskFormer's config: without mmdet its build fails on a TypeError);
`missing(extra)` tells whether an extra imports here (scripts/zoo_check.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch


@dataclass(frozen=True)
class Extra:
    name: str  # the featvis extra
    needed_by: str  # the mmseg model families that need it
    install: str  # the command that installs it
    families: Tuple[str, ...]  # their config folders in mmseg's configs (`mmseg::<family>/...`)
    module: str  # what their configs import (custom_imports), or what mmseg's wrappers import

    def advice(self) -> str:
        text = f"{self.needed_by} models need the {self.name} extra: {self.install}"
        if self.name == "mmpretrain":  # its torchvision is not in the extra (see the docstring)
            text += f", and torchvision built for torch {torch.__version__}: {torchvision_command()}"
        return text


MMDET = Extra("mmdet", "Mask2Former and MaskFormer", 'pip install -e ".[mmdet]"',
              families=("mask2former", "maskformer"), module="mmdet.models")
MMPRETRAIN = Extra("mmpretrain", "ConvNeXt and PoolFormer", 'pip install -e ".[mmpretrain]"',
                   families=("convnext", "poolformer"), module="mmpretrain.models")

# top-level module -> the extra that needs it
EXTRAS: Dict[str, Extra] = {"mmdet": MMDET, "mmpretrain": MMPRETRAIN, "torchvision": MMPRETRAIN}


def torchvision_for(torch_version: str) -> Optional[str]:
    """The torchvision release built for a torch release (2.x <-> 0.(x+15): 2.13.0 -> 0.28.0); None if unknown."""
    parts = torch_version.split("+")[0].split(".")
    if len(parts) < 2 or parts[0] != "2" or not parts[1].isdigit():
        return None
    return f"0.{int(parts[1]) + 15}.0"


def torchvision_command() -> str:
    """How to install the torchvision of the installed torch (PyTorch's CPU index for a CPU-only torch)."""
    want = torchvision_for(torch.__version__)
    pin = f"torchvision=={want}" if want else "torchvision (the release made for your torch)"
    if torch.version.cuda is None:
        return (f"pip install {pin} --index-url https://download.pytorch.org/whl/cpu (PyPI's torchvision is a "
                "CUDA build that does not import beside a CPU-only torch)")
    return f"pip install {pin}"


def extra_for(module: str) -> Optional[Extra]:
    """The extra that provides `module` (`mmdet`, `mmdet.models`, ...); None when featvis knows none."""
    return EXTRAS.get(module.split(".")[0])


def advice(module: str) -> Optional[str]:
    """`Mask2Former and MaskFormer models need the mmdet extra: pip install -e ".[mmdet]"` for a missing
    `mmdet`; None for a module no featvis extra provides."""
    extra = extra_for(module)
    return extra.advice() if extra else None


def for_family(family: str) -> Optional[Extra]:
    """The extra the mmseg config folder `family` needs (`mask2former` -> mmdet); None for most families."""
    return next((e for e in (MMDET, MMPRETRAIN) if family in e.families), None)


def missing(extra: Extra) -> Optional[str]:
    """None when the extra's module imports here; else one line: what failed, and the advice."""
    try:
        importlib.import_module(extra.module)
    except Exception as err:  # ImportError, or a torchvision built for another torch (RuntimeError)
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"cannot import {extra.module} ({type(err).__name__}: {text}): {extra.advice()}"
    return None


# mmseg heads that subclass mmdet's (mmseg falls back to BaseModule when mmdet is missing, and the
# build then fails with "BaseModule.__init__() got an unexpected keyword argument")
WRAPPED = {"MaskFormerHead": MMDET, "Mask2FormerHead": MMDET}


def needed_by(model_cfg: Any) -> List[Extra]:
    """The extras a config's `model` dict builds from: `type='mmdet.X'` / `'mmpretrain.X'` anywhere in
    it, or an mmseg head that wraps mmdet's."""
    found: List[Extra] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            kind = node.get("type")
            if isinstance(kind, str):
                extra = WRAPPED.get(kind) or (EXTRAS.get(kind.split(".")[0]) if "." in kind else None)
                if extra is not None and extra not in found:
                    found.append(extra)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(model_cfg)
    return found


def check_config(config: str, model_cfg: Any) -> Optional[str]:
    """None when every extra the config's model needs imports here; else one line for a ConfigError,
    to say before the model is built (featvis.model.load)."""
    for extra in needed_by(model_cfg):
        why = missing(extra)
        if why:
            return f"model.config {config!r} builds from {extra.name}: {why}"
    return None
