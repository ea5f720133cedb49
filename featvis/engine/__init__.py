"""The engine: draw the layers of a model, with no Hydra, no output-folder policy and no sweep.

    session    Session: model + layers + reduction -> each image's pictures (and its stats, its sketch)
    inputs     a path or an H x W x 3 BGR array (and its mask) -> the data stage's Loaded item
    model      a built segmentor adopted, or an mmseg config + checkpoint loaded
    sinks      where pictures go besides the caller: featvis's backends or an MMEngine Visualizer's
    inference  image -> prediction and recorded maps (or a kept forward: forward_cache)
    forward_errors  a forward pass that fails on an image said in one line; stride networks padded
    drawer     draws and logs each image in worker threads while the model runs the next
    budget     each image's memory, checked before any is decoded (probe: a model's bytes per pixel
               fed, measured; room: the memory the machine leaves)
    result     what a run drew, for the command line and the sweep summary
"""

from typing import Any

__all__ = ["Normalize", "Pictures", "Session"]


def __getattr__(name: str) -> Any:
    """The session's names, imported on first use: `featvis.engine.result` (which the command line reads
    before it runs anything) must not import torch and mmseg."""
    if name in __all__:
        from featvis.engine import session  # noqa: PLC0415

        return getattr(session, name)
    raise AttributeError(f"module 'featvis.engine' has no attribute {name!r}")
