"""What every reduction is: the `Reduction` base class, its config and its result.

A reduction turns one (C, H, W) feature map into the (K, H, W) maps that get drawn.
Each one is a small subclass of `Reduction` in its own module of this package (found
by featvis.reduce.registry), with a config dataclass holding only its own options and
class attributes, its *traits*, that the rest of featvis asks instead of naming it:

    name            `reduction=<name>`; conf/reduction/<name>.yaml selects it
    config_class    its options (a ReductionConfig subclass), stored in Hydra's ConfigStore
    needs_class     needs `reduction.target_class` (its config_class has that field)
    uses_gradients  runs the model itself (`run_model`), instead of inside a forward hook
    draws_rgb       its 3 maps, in [0, 1], are the R, G, B of one picture
    render_only     its options that change the drawing only, not the reduced maps
    fits_some_layers applies to some layers only, which a recorded map tells: the pipeline runs
                    the first image before it writes anything, so a misfit fails first

and class methods that read a config, for callers that have no model yet (validate,
the sweep plan, the panels): `check_options`, `needs_first_pass`, `shares_forward`,
`layout`. Built from its config and the loaded model (`registry.build`), a reduction
checks what needs the model (a class name) before any output is written; then
`reduction(feat, layer=<sub-name>)` runs inside the recorder's forward hook, so it must
be cheap and keep no reference to `feat`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from torch import nn

from featvis.errors import ConfigError
from featvis.record.recorded import ModelPass, Reduced  # noqa: F401 (the reductions' names for them)
from featvis.reduce.options import ClassTargetConfig, ReductionConfig  # noqa: F401 (the reductions' names)


class Reduction(ABC):
    """One way to turn a (C, H, W) map into (K, H, W) maps; see the module docstring for the traits."""

    name: ClassVar[str] = ""  # empty: not a reduction (a base class)
    config_class: ClassVar[Type[ReductionConfig]] = ReductionConfig
    needs_class: ClassVar[bool] = False
    uses_gradients: ClassVar[bool] = False
    draws_rgb: ClassVar[bool] = False
    render_only: ClassVar[FrozenSet[str]] = frozenset()
    fits_some_layers: ClassVar[bool] = False

    def __init__(self, config: ReductionConfig, model: Optional[nn.Module] = None) -> None:
        """`config`: a config_class (an instance or Hydra's typed node); `model`: the loaded
        segmentor (with `dataset_meta`), for reductions that need it. Raises ReductionError
        (one line) for what only the model can tell, such as an unknown class."""
        self.config = config

    # ------------------------------------------------------------ traits that read a config

    @classmethod
    def check_options(cls, config: ReductionConfig) -> None:
        """Raise ConfigError (one line: the key, what is wrong, the fix) for a bad option value."""
        if cls.needs_class and getattr(config, "target_class", None) is None:
            raise ConfigError(f"reduction={cls.name} needs a class: pass reduction.target_class=<class name or index>")

    @classmethod
    def needs_first_pass(cls, config: ReductionConfig) -> bool:
        """True: the pipeline first runs the model over every image with `observe` as the
        recorder's reduce_fn, then calls `fit`, then runs the real pass."""
        return False

    @classmethod
    def shares_forward(cls, config: ReductionConfig) -> bool:
        """Whether jobs of a sweep may take this reduction's maps from another job's forward pass."""
        return not cls.uses_gradients and not cls.needs_first_pass(config)

    @classmethod
    def layout(cls, config: ReductionConfig) -> Optional[Tuple[int, int]]:
        """(rows, cols) of the grid its K > 1 maps are drawn in; None: one row."""
        return None

    # ------------------------------------------------------------------- what it does

    def __call__(self, feat: torch.Tensor, layer: str = "") -> Reduced:
        """Reduce one (C, H, W) map of `layer` (the recorder's sub-name); float32, on the CPU.

        The maps are a copy, never a view: a view would keep the whole C x H x W storage alive.
        """
        out = self.apply(feat.detach().float(), layer)
        out.maps = out.maps.detach().float().cpu().clone()
        return out

    @abstractmethod
    def apply(self, feat: torch.Tensor, layer: str) -> Reduced:
        """The reduction itself: `feat` (C, H, W) float32, detached, on the model's device."""

    def observe(self, feat: torch.Tensor, layer: str = "") -> Reduced:
        """First pass (needs_first_pass): take in one map; returns an empty Reduced (0, H, W)."""
        raise NotImplementedError(f"reduction {self.name} has no first pass")

    def fit(self) -> None:
        """Between the passes (needs_first_pass): fit what `observe` took in."""
        raise NotImplementedError(f"reduction {self.name} has no first pass")

    def observed(self) -> Dict[str, Dict[str, np.ndarray]]:
        """What `observe` took in, per layer, as plain arrays (the shards of a job each observe their own
        images; each then fits on all of them with `fit_on`)."""
        raise NotImplementedError(f"reduction {self.name} has no first pass")

    def fit_on(self, observed: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> None:
        """Fit on what several passes observed (their `observed()`), instead of on what this one did."""
        raise NotImplementedError(f"reduction {self.name} has no first pass")

    def run_model(self, image_bgr: np.ndarray, layers: Sequence[Any]) -> ModelPass:
        """uses_gradients: run the model on one BGR image and reduce `layers` (select_layers's)."""
        raise NotImplementedError(f"reduction {self.name} runs inside forward hooks")
