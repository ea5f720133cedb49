"""Layer specs -> forward hooks that record what each chosen layer outputs.

    presets   layer presets read off the model (backbone, neck, decoder, auxiliary, dense)
    layers    names, globs, types, picks and /input -> the model's modules
    auxiliary auxiliary heads run at inference, so their layers can be drawn
    hooks     a set of hooks removed on every exit path
    recorder  each output reduced in its hook (tuples, tokens, repeated calls, slide windows)
    tokens    transformer tokens (B, N, C) -> maps
    slide     slide-inference windows stitched into one map per layer
    gradcam   Grad-CAM's own forward and backward pass
    recorded  what the stage hands on for one image
    listing   mode=list: every module, what it outputs, which presets hold it
"""
