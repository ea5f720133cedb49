"""Recorded features compared by numbers: checkpoints against a baseline, layers against each other.

    cka      linear CKA (Kornblith et al. 2019), accumulated image by image
    sketch   what a job keeps for comparing: each layer's features at a seeded, shared sample
             of pixel positions, and its reduced map, per image (`<job>/featvis/sketch.npz`)
    layers   the CKA matrix of one job's layers, image by image (compare.layer_similarity)
    checkpoints  a sweep's checkpoints against a baseline, per layer: CKA, change, ranking (the summary's)
    diff     difference sheets: each checkpoint's reduced maps minus the baseline's, per image
"""
