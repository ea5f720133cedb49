"""The inputs: images and ground-truth masks, found, checked up front, decoded one at a time.

    images   files, folders and globs -> checked samples; decoded one at a time
    headers  an image's size, mode and EXIF orientation, read before any pixel is decoded
    dataset  image=dataset:<split>: the samples of an mmseg config's dataset
    names    output names from file stems: one safe folder name each, unique in the run
    paths    `featvis::` assets and `mmseg::` configs -> files
    mmseg_config  model.cfg_options and model.scale applied to an mmseg config (the model's, a dataset's)
    masks    mask values that are not classes of the model: reported, drawn as unlabelled
    limits, batches, prefetch: the pixel limit; images of one shape per forward; decoding ahead
"""
