"""featvis: see what the layers of an MMSegmentation 1.x model see.

One package per stage of a job, in the order the data flows:

    config/    what a job may say: Hydra structured-config schemas, paths, the job's names
    data/      images and ground-truth masks: found, checked up front, decoded one at a time
    model/     mmseg config + checkpoint -> an eval-mode model (safe loading, a cache per process)
    record/    layer specs -> forward hooks that record each layer's map as it is produced
    reduce/    C channels -> the maps that get drawn: one file per reduction, traits on each
    render/    reduced maps and label masks -> RGB pictures (`Panel`s) over the image
    backends/  where pictures go: local PNGs, W&B, MMEngine's other vis backends
    sweep/     multirun sweeps: shared forward passes, per-job results, contact sheets, summaries

    engine/    Session, the library's entry (no Hydra): a model, layers and a reduction -> pictures;
               the forward pass, the drawing threads, the memory plan
    pipeline/  the command line's job on the engine; mode=list; cli.py: the Hydra entry point
    signals.py: SIGTERM and SIGHUP handled like Ctrl-C; stderr.py: C libraries' stderr into the log
"""

__version__ = "0.1.0"

_ENGINE = ("Session", "Pictures", "Normalize")  # featvis.engine: loaded on first use, so `import featvis`
# (the command line's start) imports no torch or mmseg


def __getattr__(name: str):
    if name in _ENGINE:
        from featvis.engine import session  # noqa: PLC0415

        return getattr(session, name)
    raise AttributeError(f"module 'featvis' has no attribute {name!r}")


__all__ = ["Normalize", "Pictures", "Session", "__version__"]
