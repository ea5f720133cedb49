"""The engine: draw the layers of a model, with no Hydra, no output-folder policy and no sweep.

    session.py  Session: model + layers + reduction -> each image's pictures (and its stats, its sketch)
    inputs.py   a path or an H x W x 3 BGR array (and its mask) -> the data stage's Loaded item
    model.py    a built segmentor adopted, or an mmseg config + checkpoint loaded
    sinks.py    where pictures go besides the caller: featvis's backends or an MMEngine Visualizer's
"""

from featvis.engine.session import Normalize, Pictures, Session

__all__ = ["Normalize", "Pictures", "Session"]
