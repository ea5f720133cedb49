# Tiny PSPNet (ResNetV1c-18, 1/4 width) for featvis' embedded demo.
#
# Trained from scratch by `python -m featvis.demo.train` on procedural scenes
# (featvis.demo.scenes); classes: ('background', 'circle', 'square',
# 'triangle'), stored in the checkpoint's meta['dataset_meta'].
# Only standard MMSegmentation 1.x components are used; no data on disk.
default_scope = 'mmseg'

num_classes = 4  # == len(featvis.demo.scenes.CLASSES)
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        in_channels=3,
        stem_channels=16,
        base_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='PSPHead',
        in_channels=128,
        in_index=3,
        channels=32,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=64,
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='PackSegInputs'),
]

# The shipped demo scenes as an ordinary mmseg dataset, so that `image=dataset:test`
# works out of the box (featvis reads image and mask paths from it).
test_dataloader = dict(
    batch_size=1,
    dataset=dict(
        type='BaseSegDataset',
        data_root='{{ fileDirname }}/../demo',
        data_prefix=dict(img_path='images', seg_map_path='masks'),
        img_suffix='.png',
        seg_map_suffix='.png',
        metainfo=dict(
            classes=('background', 'circle', 'square', 'triangle'),
            palette=[[72, 72, 72], [230, 25, 75], [60, 180, 75], [0, 130, 200]]),
        pipeline=test_pipeline))
