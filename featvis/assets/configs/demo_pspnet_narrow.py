# featvis's second demo model: the demo PSPNet (demo_pspnet.py) built at half its width
# (ResNetV1c-18 at 1/8 width: stages of 8, 16, 32 and 64 channels), trained the same way on
# the same procedural scenes (python -m featvis.demo.train --config <this file> --out
# featvis/assets/checkpoints/demo_pspnet_narrow.pth). A differently built model for the
# cross-model comparison: python run.py -m model=demo,demo_narrow layers=backbone
_base_ = './demo_pspnet.py'

model = dict(
    backbone=dict(stem_channels=8, base_channels=8),
    decode_head=dict(in_channels=64, channels=16),
    auxiliary_head=dict(in_channels=32, channels=16))
