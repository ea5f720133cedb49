"""The job's inputs: images and ground-truth masks, found, checked up front, decoded one at a time.

    images  files, folders, globs and datasets -> checked samples; decoded one at a time
    names   output names from file stems: one safe folder name each, unique in the run
    masks   mask values that are not classes of the model: reported, drawn as unlabelled
"""
