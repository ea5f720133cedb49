"""mmseg config + checkpoint -> an eval-mode model.

    checkpoints  model.checkpoint (a path, a URL or null) -> a local file
    safe_load    reading a checkpoint without running code from it (weights_only)
    load         building the model with mmseg's init_model; classes and palette
    extras       the OpenMMLab extras (mmdet, mmpretrain) a config needs, named when missing
    mismatch     the checkpoint's keys and shapes against the model's (model.strict)
    stride       a network's input stride (DDRNet, PIDNet), found once after a size mismatch; pads as
                 SegDataPreProcessor's test_cfg size_divisor does
    cache        models kept for the next job of the process
"""
