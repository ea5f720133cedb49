"""featvis: see what the layers of an MMSegmentation 1.x model see.

The pipeline, one module a step:

    config_schema  -> what a job may say (Hydra structured configs)
    inputs         -> images and ground-truth masks, checked before anything runs
    model_loader   -> mmseg config + checkpoint -> model (checkpoints: path/URL/None)
    layer_selection-> layer names and globs -> modules, in the user's order
    recorder       -> forward hooks that reduce each feature map as it is produced
    reductions     -> channel reductions (select_max, squeeze_mean, topk)
    rendering      -> maps and masks -> RGB pictures overlaid on the image
    visualizer     -> MMEngine vis backends built from the `backends` config group
    pipeline       -> one job: all of the above, for every image
    cli            -> the Hydra entry point used by run.py, with one-line errors
"""

__version__ = "0.1.0"
