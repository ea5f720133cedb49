"""featvis's visualization backends, registered in MMEngine's VISBACKENDS registry.

They follow MMEngine's BaseVisBackend interface, so MMEngine's own backends
(LocalVisBackend, TensorboardVisBackend, MLflowVisBackend, ...) plug in beside them
with one config file. `add_image` gets two extra keyword arguments that MMEngine's
backends ignore: `image_id` (the input image's stem) and `caption`.
"""

from featvis.backends.local import FeatvisLocalVisBackend
from featvis.backends.run_info import RunInfo, RunAwareBackend
from featvis.backends.wandb import FeatvisWandbVisBackend

__all__ = ["FeatvisLocalVisBackend", "FeatvisWandbVisBackend", "RunInfo", "RunAwareBackend"]
