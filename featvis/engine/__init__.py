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

from featvis.engine.session import Normalize, Pictures, Session

__all__ = ["Normalize", "Pictures", "Session"]
