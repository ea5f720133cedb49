"""Reduced maps and label masks -> `Panel`s: RGB pictures of the original image's size.

    align      padding cropped, resized to the image
    scales     colour ranges (normalize.mode) and which colormap
    colormaps  JET (OpenCV's) and a blue-white-red diverging map (matplotlib's RdBu)
    heatmap    maps -> heat maps over the image (`Overlay`)
    labels     label maps -> the dataset palette over the image
    draw       scale bars, grids of tiles, labels
    panel      the `Panel` record
    panels     one image's panels: input, ground truth, prediction, every layer
    similarity a similarity matrix (layers x layers) as a heat map picture
    cka_table  CKA values of layers x checkpoints as a heat map picture (the sweep summary's)
"""
