"""featvis's visualization backends, registered in MMEngine's VISBACKENDS registry.

They implement featvis.backends.base.FeatvisBackend, MMEngine's BaseVisBackend plus what
featvis adds (`add_panel`, `start`, `close(failed)`, `picture_format`), so MMEngine's own
backends (LocalVisBackend, TensorboardVisBackend, MLflowVisBackend, ...) plug in beside
them with one config file: the visualizer wraps those (featvis.backends.adapter).
"""

from featvis.backends.base import FeatvisBackend, RunInfo
from featvis.backends.local import FeatvisLocalVisBackend
from featvis.backends.wandb import FeatvisWandbVisBackend

__all__ = ["FeatvisBackend", "FeatvisLocalVisBackend", "FeatvisWandbVisBackend", "RunInfo"]
