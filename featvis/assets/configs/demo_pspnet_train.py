# Train the demo PSPNet with MMEngine's Runner, as mmseg's tools/train.py does
# (Runner.from_cfg(cfg).train()), on the shipped demo scenes, drawing its layers as it learns:
#
#   python -c "from mmengine.config import Config; from mmengine.runner import Runner; \
#              Runner.from_cfg(Config.fromfile('featvis/assets/configs/demo_pspnet_train.py')).train()"
#
# A few iterations on CPU take seconds; the drawings go to work_dirs/demo_pspnet_train/.../vis_data.
_base_ = ['./demo_pspnet.py']

custom_imports = dict(imports=['featvis.hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='FeatvisHook', layers='decoder', reduction='select_max', interval=10)]

work_dir = './work_dirs/demo_pspnet_train'
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
_scenes = dict(
    type='BaseSegDataset',
    data_root='{{ fileDirname }}/../demo',
    data_prefix=dict(img_path='images', seg_map_path='masks'),
    img_suffix='.png',
    seg_map_suffix='.png',
    metainfo=dict(
        classes=('background', 'circle', 'square', 'triangle'),
        palette=[[72, 72, 72], [230, 25, 75], [60, 180, 75], [0, 130, 200]]))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**_scenes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**_scenes, pipeline=val_pipeline))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40, val_interval=20)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=40, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
