"""Each reduction's options, as plain dataclasses: the schema Hydra composes conf/reduction/<name>.yaml onto.

They live apart from the reductions (which import torch) so that the command line can compose a
config, print its help or say what is wrong with it without importing torch or mmseg. `OPTIONS`
names each reduction's options class; tests/test_reduce_registry.py checks it against the
reductions' `config_class`, so the two cannot drift apart. A new reduction with options of its own
adds its dataclass here (see the README's "Add a reduction").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Type

from omegaconf import MISSING


@dataclass
class ReductionConfig:
    """The options every reduction has; a reduction with options of its own subclasses it."""

    name: str = MISSING  # a reduction's name: a key of featvis.reduce.registry.reductions()


@dataclass
class ClassTargetConfig(ReductionConfig):
    """The options of a reduction that needs_class."""

    target_class: Optional[str] = None  # a class name or index of the model's dataset


@dataclass
class TopkConfig(ReductionConfig):
    topk: int = 4  # channels drawn
    arrangement: List[int] = field(default_factory=lambda: [2, 2])  # rows, cols of the grid they are drawn in


@dataclass
class ClassMapConfig(ClassTargetConfig):
    """target_class: the class whose logit is drawn (a name or an index)."""


@dataclass
class GradcamConfig(ClassTargetConfig):
    """target_class: the class whose predicted pixels the gradient is taken for (a name or an index)."""


@dataclass
class PcaRgbConfig(ReductionConfig):
    shared_basis: bool = False  # fit one basis per layer over all images (two passes): colours match across them


OPTIONS: Dict[str, Type[ReductionConfig]] = {  # every reduction's name -> its options (featvis.reduce.*)
    "channel_max": ReductionConfig, "class_map": ClassMapConfig, "gradcam": GradcamConfig,
    "l2_norm": ReductionConfig, "pca_rgb": PcaRgbConfig, "select_max": ReductionConfig,
    "squeeze_mean": ReductionConfig, "std": ReductionConfig, "topk": TopkConfig,
}
